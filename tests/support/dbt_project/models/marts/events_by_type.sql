select event_type, count(*) as events
from {{ ref('stg_test_events') }}
group by event_type
