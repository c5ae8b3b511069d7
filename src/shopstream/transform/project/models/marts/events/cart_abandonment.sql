{#- Carts left without a purchase, per business day (of the cart's first add) and device.

    A cart is the add_to_cart / remove_from_cart events with one cart_id; events without one
    use the tracker's session_id, and failing that the visitor and day. Its value is the sum of
    price x quantity added minus removed (not below 0). It is *purchased* when the same visitor
    (coalesce(anonymous_id, user_id)) sends a purchase between the first add and
    var('cart_abandonment_hours', 24) hours after the cart's last activity; *abandoned* when
    that window has passed without one; *open* while it has not passed yet. "Now" is the
    newest event_ts in stg_events, not the clock, so a rebuild gives the same answer. Bots are
    left out. A table: carts change state as time passes, so every run recomputes it. -#}
{{ config(materialized='table') }}
{%- set money = money_type() %}
{%- set window_hours = var('cart_abandonment_hours', 24) %}

with cart_events as (
    select
        coalesce(
            cart_id,
            'session:' || session_id,
            'visitor:' || coalesce(anonymous_id, user_id) || ':' || cast(event_day as {{ dbt.type_string() }})
        ) as cart_key,
        coalesce(anonymous_id, user_id) as visitor_id,
        event_type,
        event_ts,
        device_type,
        cast(coalesce(price, 0) * coalesce(quantity, 1) as {{ money }}) as line_value
    from {{ ref('stg_events') }}
    where not is_bot and event_type in ('add_to_cart', 'remove_from_cart')
),

carts as (
    select
        cart_key,
        min(visitor_id) as visitor_id,
        min(case when event_type = 'add_to_cart' then event_ts end) as first_added_at,
        max(event_ts) as last_activity_at,
        cast(sum(case when event_type = 'add_to_cart' then line_value else 0 end)
             - sum(case when event_type = 'remove_from_cart' then line_value else 0 end) as {{ money }}) as net_value
    from cart_events
    group by cart_key
    having min(case when event_type = 'add_to_cart' then event_ts end) is not null
),

first_device as (
    select cart_key, device_type
    from (
        select cart_key, device_type,
               row_number() over (partition by cart_key order by event_ts) as n
        from cart_events
        where event_type = 'add_to_cart'
    ) as ranked
    where n = 1
),

purchased as (
    select distinct carts.cart_key
    from carts
    inner join {{ ref('stg_events') }} as purchase
        on coalesce(purchase.anonymous_id, purchase.user_id) = carts.visitor_id
       and purchase.event_type = 'purchase'
       and not purchase.is_bot
       and purchase.event_ts >= carts.first_added_at
       and purchase.event_ts <= {{ shift_timestamp('hour', window_hours, 'carts.last_activity_at') }}
),

now_ as (
    select max(event_ts) as data_now from {{ ref('stg_events') }}
),

outcomes as (
    select
        carts.cart_key,
        {{ local_date('carts.first_added_at') }} as cart_date,
        first_device.device_type,
        case when carts.net_value > 0 then carts.net_value else cast(0 as {{ money }}) end as cart_value,
        case
            when purchased.cart_key is not null then 'purchased'
            when {{ shift_timestamp('hour', window_hours, 'carts.last_activity_at') }} < now_.data_now then 'abandoned'
            else 'open'
        end as outcome
    from carts
    cross join now_
    left join first_device on first_device.cart_key = carts.cart_key
    left join purchased on purchased.cart_key = carts.cart_key
)

select
    cart_date,
    device_type,
    count(*) as carts,
    sum(case when outcome = 'purchased' then 1 else 0 end) as purchased_carts,
    sum(case when outcome = 'abandoned' then 1 else 0 end) as abandoned_carts,
    sum(case when outcome = 'open' then 1 else 0 end) as open_carts,
    cast(coalesce(sum(case when outcome = 'abandoned' then cart_value end), 0) as {{ money }}) as abandoned_value,
    {{ ratio("sum(case when outcome = 'abandoned' then 1 else 0 end)",
             "sum(case when outcome in ('purchased', 'abandoned') then 1 else 0 end)") }} as abandonment_rate
from outcomes
group by cart_date, device_type
