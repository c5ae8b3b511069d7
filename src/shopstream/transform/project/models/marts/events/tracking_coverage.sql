{#- Per business day: the shop database's orders (stg_orders, day of created_at in
    var('timezone')) against the purchase events that name them (properties.order_id, day of
    event_ts), matched by order_id. Revenue on the database side is sum(quantity x unit_price)
    of the order's lines (stg_order_items), on the events side the purchase's revenue; an
    order named by several purchase events counts once, with its first event's revenue.
    A matched pair is counted on the order's day. Bots are left out.
    Built only when the shop's orders and order lines are captured (var('captured_tables')). -#}
{%- set captured = var('captured_tables', []) %}
{{ config(
    materialized='table',
    enabled=('stg_orders' in captured and 'stg_order_items' in captured),
) }}
{%- set money = money_type() %}

with db_orders as (
    select
        cast(orders.order_id as {{ dbt.type_string() }}) as order_id,
        {{ local_date('orders.created_at') }} as order_date,
        cast(coalesce(sum(items.quantity * items.unit_price), 0) as {{ money }}) as db_revenue
    from {{ ref('stg_orders') }} as orders
    left join {{ ref('stg_order_items') }} as items on items.order_id = orders.order_id
    group by orders.order_id, orders.created_at
),

event_orders as (
    select order_id, event_day, revenue
    from (
        select
            order_id,
            event_day,
            revenue,
            row_number() over (partition by order_id order by event_ts, event_id) as n
        from {{ ref('stg_events') }}
        where event_type = 'purchase' and not is_bot
    ) as ranked
    where n = 1
),

paired as (
    select
        coalesce(db_orders.order_date, event_orders.event_day) as coverage_date,
        db_orders.order_id as db_order_id,
        event_orders.order_id as event_order_id,
        db_orders.db_revenue,
        event_orders.revenue as event_revenue
    from db_orders
    full outer join event_orders on event_orders.order_id = db_orders.order_id
)

select
    coverage_date,
    count(db_order_id) as orders_in_db,
    count(event_order_id) as orders_in_events,
    sum(case when db_order_id is not null and event_order_id is not null then 1 else 0 end) as matched_orders,
    sum(case when event_order_id is null then 1 else 0 end) as orders_without_event,
    sum(case when db_order_id is null then 1 else 0 end) as events_without_order,
    cast(coalesce(sum(db_revenue), 0) as {{ money }}) as db_revenue,
    cast(coalesce(sum(event_revenue), 0) as {{ money }}) as event_revenue,
    cast(coalesce(sum(event_revenue), 0) - coalesce(sum(db_revenue), 0) as {{ money }}) as revenue_difference,
    sum(case when db_order_id is not null and event_order_id is not null
              and db_revenue <> event_revenue then 1 else 0 end) as matched_revenue_mismatches,
    {{ ratio('sum(case when db_order_id is not null and event_order_id is not null then 1 else 0 end)',
             'count(db_order_id)') }} as coverage_rate
from paired
group by coverage_date
