{#- The lines of purchase events (properties.items), one row per event and line. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['event_id', 'line_no'],
    partition_by=({'field': 'event_date', 'data_type': 'date'} if target.type == 'bigquery' else none),
    cluster_by=(['product_id'] if target.type == 'bigquery' else none),
) }}
{%- set money = money_type() %}

with purchases as (
    select
        event_id, event_ts, received_at, event_date, event_day, order_id, is_bot, device_type,
        properties
    from {{ ref('stg_events') }}
    where event_type = 'purchase'
    {% if is_incremental() %}
      and received_at > {{ received_window_start(this) }}
      and event_id not in (select event_id from {{ this }})
    {% endif %}
)

select
    purchases.event_id,
    {{ json_element_index('item') }} as line_no,
    purchases.order_id,
    purchases.event_ts,
    purchases.received_at,
    purchases.event_date,
    purchases.event_day,
    purchases.device_type,
    purchases.is_bot,
    {{ json_text(json_element('item'), '$.product_id') }} as product_id,
    {{ json_text(json_element('item'), '$.category') }} as category,
    {{ try_number(json_text(json_element('item'), '$.quantity'), dbt.type_bigint()) }} as quantity,
    {{ try_number(json_text(json_element('item'), '$.price'), money) }} as price,
    cast(
        {{ try_number(json_text(json_element('item'), '$.quantity'), dbt.type_bigint()) }}
        * {{ try_number(json_text(json_element('item'), '$.price'), money) }}
        as {{ money }}
    ) as line_revenue
from purchases
{{ json_elements_join('purchases.properties', '$.items', 'item') }}
