{#- Per product and business day (event_day, var('timezone')), bots left out: product views,
    cart adds (events and units), purchases (purchase events with a line of the product),
    units and revenue from the purchase lines, and view -> purchase rate.

    Incremental: the days from recompute_from() on are deleted and recomputed. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['product_id', 'event_day'],
    on_schema_change='append_new_columns',
    pre_hook=("{% if is_incremental() %}delete from {{ this }} where event_day >= "
              ~ "{{ recompute_from() }}{% endif %}"),
    partition_by=({'field': 'event_day', 'data_type': 'date'} if target.type == 'bigquery' else none),
    cluster_by=(['product_id'] if target.type == 'bigquery' else none),
) }}
{%- set money = money_type() %}

with behaviour as (
    select
        product_id,
        event_day,
        max(category) as category,
        sum(case when event_type = 'product_view' then 1 else 0 end) as views,
        sum(case when event_type = 'add_to_cart' then 1 else 0 end) as cart_adds,
        coalesce(sum(case when event_type = 'add_to_cart' then quantity end), 0) as cart_units,
        max(received_at) as last_received_at
    from {{ ref('stg_events') }}
    where not is_bot
      and product_id is not null
      and event_type in ('product_view', 'add_to_cart')
      {% if is_incremental() %}and event_day >= {{ recompute_from() }}{% endif %}
    group by product_id, event_day
),

bought as (
    select
        items.product_id,
        items.event_day,
        max(items.category) as category,
        count(distinct items.event_id) as purchases,
        sum(items.quantity) as units,
        cast(sum(items.line_revenue) as {{ money }}) as revenue,
        max(items.received_at) as last_received_at
    from {{ ref('stg_event_items') }} as items
    where not items.is_bot
      and items.product_id is not null
      {% if is_incremental() %}and items.event_day >= {{ recompute_from() }}{% endif %}
    group by items.product_id, items.event_day
)

select
    coalesce(behaviour.product_id, bought.product_id) as product_id,
    coalesce(behaviour.event_day, bought.event_day) as event_day,
    coalesce(behaviour.category, bought.category) as category,
    coalesce(behaviour.views, 0) as views,
    coalesce(behaviour.cart_adds, 0) as cart_adds,
    coalesce(behaviour.cart_units, 0) as cart_units,
    coalesce(bought.purchases, 0) as purchases,
    coalesce(bought.units, 0) as units,
    cast(coalesce(bought.revenue, 0) as {{ money }}) as revenue,
    {{ ratio('coalesce(bought.purchases, 0)', 'behaviour.views') }} as view_to_purchase_rate,
    case
        when behaviour.last_received_at is null then bought.last_received_at
        when bought.last_received_at is null then behaviour.last_received_at
        when bought.last_received_at > behaviour.last_received_at then bought.last_received_at
        else behaviour.last_received_at
    end as last_received_at
from behaviour
full outer join bought
    on bought.product_id = behaviour.product_id and bought.event_day = behaviour.event_day
