{#- The raw events of the incremental window, one per event_id (the first received), typed,
    flagged and privacy-cleaned, each with `reject_reason`: null when the row keeps the
    contract, else the first rule it breaks. stg_events keeps the rows without a reason,
    stg_events_rejected the others, so nothing is dropped without being counted.

    The window (incremental runs): raw rows received after max(received_at) of `watermark`
    minus var('lookback_days') days (from the far past when `watermark` is empty). The first
    received copy of an event_id decides its fate once: ids already in any of `known` are left
    out, and so are ids with a copy received before the window (decided by an earlier run,
    maybe into the other table), so a later duplicate never replaces nor moves it, whatever
    the lookback. -#}

{% macro event_types() %}
    {{ return(['page_view', 'product_view', 'product_click', 'search', 'search_click',
               'add_to_cart', 'remove_from_cart', 'begin_checkout', 'purchase', 'wishlist_add',
               'review_write', 'app_open', 'app_close', 'push_click', 'banner_click', 'custom']) }}
{% endmacro %}

{% macro device_types() %}{{ return(['ios', 'android', 'web_mobile', 'web_desktop']) }}{% endmacro %}

{#- The reasons a row is kept out of stg_events, in the order they are checked. -#}
{% macro event_reject_reasons() %}
    {{ return(['unknown_event_type', 'unknown_device_type', 'no_visitor', 'properties_not_json',
               'missing_product_id', 'missing_query', 'purchase_without_order_id',
               'revenue_not_a_number', 'negative_revenue', 'bad_quantity', 'bad_price',
               'bad_item']) }}
{% endmacro %}

{% macro quoted_list(values) -%}
    {%- for v in values %}'{{ v }}'{% if not loop.last %}, {% endif %}{% endfor -%}
{%- endmacro %}

{% macro events_typed(watermark, known) %}
{%- set money = money_type() -%}
with window_rows as (
    select *
    from {{ source('raw', 'events') }}
    {% if is_incremental() %}
    where received_at > {{ received_window_start(watermark) }}
    {% endif %}
),

{% if is_incremental() %}
{#- Ids of the window whose first copy was received before it: that copy was decided on by an
    earlier run (staged or rejected, by stg_events or stg_events_rejected), so no later copy
    may decide again. Looked up for the window's ids only. -#}
decided_before as (
    select distinct event_id
    from {{ source('raw', 'events') }}
    where received_at <= {{ received_window_start(watermark) }}
      and event_id in (select event_id from window_rows)
),
{% endif %}

first_received as (
    select *
    from (
        select
            window_rows.*,
            row_number() over (
                partition by event_id
                order by received_at, ip, user_agent, {{ json_as_text('payload') }}
            ) as copy_number
        from window_rows
    ) as numbered
    where copy_number = 1
    {%- if is_incremental() %}
      and event_id not in (select event_id from decided_before)
    {%- endif %}
    {%- for relation in known %}
      and event_id not in (select event_id from {{ relation }})
    {%- endfor %}
),

parsed as (
    select
        first_received.*,
        {{ json_if_valid('properties') }} as props
    from first_received
),

items as (
    select
        parsed.event_id,
        {{ json_text(json_element('item'), '$.product_id') }} as product_id,
        {{ json_text(json_element('item'), '$.quantity') }} as quantity,
        {{ json_text(json_element('item'), '$.price') }} as price
    from parsed
    {{ json_elements_join('parsed.props', '$.items', 'item') }}
    where parsed.event_type = 'purchase'
),

bad_items as (
    select event_id, count(*) as bad_item_count
    from items
    where coalesce(product_id, '') = ''
       or quantity is null or {{ try_number('quantity', dbt.type_bigint()) }} is null
       or {{ try_number('quantity', dbt.type_bigint()) }} < 1
       or (price is not null and (
            {{ try_number('price', money) }} is null or {{ try_number('price', money) }} < 0))
    group by event_id
),

typed as (
    select
        parsed.event_id,
        parsed.event_type,
        parsed.event_name,
        parsed.event_ts,
        parsed.received_at,
        parsed.event_date,
        {{ local_date('parsed.event_ts') }} as event_day,
        {{ hash_email("nullif(parsed.user_id, '')") }} as user_id,
        {{ hash_email("nullif(parsed.anonymous_id, '')") }} as anonymous_id,
        nullif(parsed.session_id, '') as session_id,
        parsed.device_type,
        {{ redact_emails('parsed.page_url') }} as page_url,
        {{ redact_emails('parsed.referrer') }} as referrer,
        parsed.utm_source,
        parsed.utm_medium,
        parsed.utm_campaign,
        {{ truncate_ip('parsed.ip') }} as ip_prefix,
        parsed.user_agent,
        {{ is_bot('parsed.user_agent') }} as is_bot,
        parsed.source,
        {{ json_text('props', '$.product_id') }} as product_id,
        {{ json_text('props', '$.name') }} as product_name,
        {{ json_text('props', '$.category') }} as category,
        {{ try_number(json_text('props', '$.price'), money) }} as price,
        {{ try_number(json_text('props', '$.quantity'), dbt.type_bigint()) }} as quantity,
        {{ json_text('props', '$.cart_id') }} as cart_id,
        {{ try_number(json_text('props', '$.cart_value'), money) }} as cart_value,
        {{ try_number(json_text('props', '$.items_count'), dbt.type_bigint()) }} as items_count,
        {{ json_text('props', '$.order_id') }} as order_id,
        {{ try_number(json_text('props', '$.revenue'), money) }} as revenue,
        {{ try_number(json_text('props', '$.shipping'), money) }} as shipping,
        {{ try_number(json_text('props', '$.discount'), money) }} as discount,
        {{ json_text('props', '$.coupon') }} as coupon,
        upper({{ json_text('props', '$.currency') }}) as currency,
        {{ hash_email(json_text('props', '$.query')) }} as search_query,
        {{ try_number(json_text('props', '$.results_count'), dbt.type_bigint()) }} as results_count,
        {{ json_text('props', '$.list_name') }} as list_name,
        {{ try_number(json_text('props', '$.position'), dbt.type_bigint()) }} as list_position,
        {{ json_text('props', '$.page_type') }} as page_type,
        {{ json_text('props', '$.page_title') }} as page_title,
        {{ json_text('props', '$.banner_id') }} as banner_id,
        {{ json_text('props', '$.placement') }} as placement,
        {{ json_text('props', '$.campaign_id') }} as campaign_id,
        {{ json_text('props', '$.push_id') }} as push_id,
        {{ try_number(json_text('props', '$.rating'), dbt.type_bigint()) }} as rating,
        {{ json_text('props', '$.review_id') }} as review_id,
        case
            when {{ json_text('props', '$.email') }} is not null
                then {{ sha256_hex("'" ~ var('email_salt') ~ "' || lower(trim(" ~ json_text('props', '$.email') ~ "))") }}
        end as email_hash,
        {{ redact_emails('props') }} as properties,
        -- what the checks below need to see as it came
        parsed.properties as raw_properties,
        {{ json_text('props', '$.price') }} as price_text,
        {{ json_text('props', '$.quantity') }} as quantity_text,
        {{ json_text('props', '$.revenue') }} as revenue_text,
        {{ json_text('props', '$.query') }} as query_text,
        coalesce(bad_items.bad_item_count, 0) as bad_item_count
    from parsed
    left join bad_items on bad_items.event_id = parsed.event_id
)

select
    typed.*,
    case
        when event_type not in ({{ quoted_list(event_types()) }}) then 'unknown_event_type'
        when device_type is not null and device_type not in ({{ quoted_list(device_types()) }})
            then 'unknown_device_type'
        when user_id is null and anonymous_id is null then 'no_visitor'
        when raw_properties is not null and properties is null then 'properties_not_json'
        when event_type in ('product_view', 'product_click', 'search_click', 'add_to_cart',
                            'remove_from_cart', 'wishlist_add', 'review_write')
             and coalesce(product_id, '') = '' then 'missing_product_id'
        when event_type in ('search', 'search_click') and query_text is null then 'missing_query'
        when event_type = 'purchase' and coalesce(order_id, '') = '' then 'purchase_without_order_id'
        when event_type = 'purchase' and revenue is null then 'revenue_not_a_number'
        when event_type = 'purchase' and revenue < 0 then 'negative_revenue'
        when quantity_text is not null and (quantity is null or quantity < 1) then 'bad_quantity'
        when price_text is not null and (price is null or price < 0) then 'bad_price'
        when bad_item_count > 0 then 'bad_item'
    end as reject_reason
from typed
{% endmacro %}
