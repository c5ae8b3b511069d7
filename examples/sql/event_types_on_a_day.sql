-- Events per type on one day: a query the optimizer has things to say about (try
-- `shopstream optimize-sql examples/sql/event_types_on_a_day.sql` after `make run`; put a day
-- your warehouse holds).
with events as (
  select * from raw.events
  where cast(event_date as varchar) = '2026-11-28'
)
select event_type, count(*) as events
from events
group by event_type
order by events desc
