{#- One row per event_id, the first copy received; rows that break the contract are in
    stg_events_rejected instead. Incremental: see macro events_typed for the window. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key='event_id',
    on_schema_change='append_new_columns',
    partition_by=({'field': 'event_date', 'data_type': 'date'} if target.type == 'bigquery' else none),
    cluster_by=(['event_type', 'anonymous_id'] if target.type == 'bigquery' else none),
) }}

with checked as (
    {{ events_typed(this, [this] if is_incremental() else []) }}
)

select
    event_id, event_type, event_name, event_ts, received_at, event_date, event_day,
    user_id, anonymous_id, session_id, device_type, page_url, referrer,
    utm_source, utm_medium, utm_campaign, ip_prefix, user_agent, is_bot, source,
    product_id, product_name, category, price, quantity, cart_id, cart_value, items_count,
    order_id, revenue, shipping, discount, coupon, currency, search_query, results_count,
    list_name, list_position, page_type, page_title, banner_id, placement, campaign_id, push_id,
    rating, review_id, email_hash, properties
from checked
where reject_reason is null
