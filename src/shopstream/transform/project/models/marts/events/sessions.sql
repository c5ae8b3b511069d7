{#- One row per derived session (macro sessionized_events): visitor, start/end, entry page,
    campaign, device, events, purchase and revenue, the customer (user_id, through
    stg_identities for sessions before login), how the tracker's own session ids fall into it,
    and the funnel steps it reached (what daily_funnel counts).

    Incremental: each run deletes and rebuilds the sessions that start on or after
    recompute_from() (the days touched by events received within the lookback, and the
    day before), from the events of one more day before that. Known limit: a session longer
    than a day that started before that window is not rebuilt. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key='session_id',
    on_schema_change='append_new_columns',
    pre_hook=("{% if is_incremental() %}delete from {{ this }} where session_date >= "
              ~ "{{ recompute_from() }}{% endif %}"),
    partition_by=({'field': 'session_date', 'data_type': 'date'} if target.type == 'bigquery' else none),
    cluster_by=(['device_type', 'visitor_id'] if target.type == 'bigquery' else none),
) }}
{%- set money = money_type() %}

with events as (
    {% if is_incremental() %}
    {{ sessionized_events(shift_date(-1, recompute_from())) }}
    {% else %}
    {{ sessionized_events() }}
    {% endif %}
),

ordered as (
    select
        events.*,
        row_number() over (partition by derived_session_id order by event_ts, event_id) as position_in_session,
        row_number() over (partition by derived_session_id order by event_ts desc, event_id desc) as position_from_end
    from events
),

entry as (
    select
        derived_session_id, visitor_id, anonymous_id, device_type, page_url, referrer,
        utm_source, utm_medium, utm_campaign, session_id as tracker_session_id
    from ordered
    where position_in_session = 1
),

logged_in as (
    -- the customer the session's own events name, the latest one
    select derived_session_id, user_id
    from (
        select
            derived_session_id,
            user_id,
            row_number() over (partition by derived_session_id order by event_ts desc, event_id desc) as newest
        from events
        where user_id is not null
    ) as ranked
    where newest = 1
),

totals as (
    select
        derived_session_id,
        min(event_ts) as session_start,
        max(event_ts) as session_end,
        max(received_at) as last_received_at,
        count(*) as events,
        sum(case when event_type = 'page_view' then 1 else 0 end) as page_views,
        sum(case when event_type = 'product_view' then 1 else 0 end) as product_views,
        sum(case when event_type = 'purchase' then 1 else 0 end) as purchases,
        cast(coalesce(sum(case when event_type = 'purchase' then revenue end), 0) as {{ money }}) as revenue,
        count(distinct session_id) as tracker_session_ids
    from events
    group by derived_session_id
),

{#- The funnel, each step strictly after the one before it in the same session. -#}
{%- set steps = ['page_view', 'product_view', 'add_to_cart', 'begin_checkout', 'purchase'] %}
{%- for step in steps %}
step_{{ step }} as (
    select events.derived_session_id, min(events.event_ts) as reached_at
    from events
    {%- if not loop.first %}
    inner join step_{{ steps[loop.index0 - 1] }} as previous
        on previous.derived_session_id = events.derived_session_id
       and events.event_ts > previous.reached_at
    {%- endif %}
    where events.event_type = '{{ step }}'
    group by events.derived_session_id
),
{%- endfor %}

identities as (
    select anonymous_id, user_id from {{ ref('stg_identities') }}
)

select
    totals.derived_session_id as session_id,
    entry.visitor_id,
    entry.anonymous_id,
    coalesce(logged_in.user_id, identities.user_id) as user_id,
    {{ local_date('totals.session_start') }} as session_date,
    totals.session_start,
    totals.session_end,
    {{ dbt.datediff('totals.session_start', 'totals.session_end', 'second') }} as duration_seconds,
    entry.device_type,
    entry.page_url as entry_page,
    entry.referrer,
    entry.utm_source,
    entry.utm_medium,
    entry.utm_campaign,
    totals.events,
    totals.page_views,
    totals.product_views,
    totals.purchases > 0 as has_purchase,
    totals.purchases,
    totals.revenue,
    entry.tracker_session_id,
    totals.tracker_session_ids,
    {%- for step in steps %}
    step_{{ step }}.reached_at as {{ step }}_at,
    {%- endfor %}
    totals.last_received_at
from totals
inner join entry on entry.derived_session_id = totals.derived_session_id
left join logged_in on logged_in.derived_session_id = totals.derived_session_id
left join identities on identities.anonymous_id = entry.anonymous_id
{%- for step in steps %}
left join step_{{ step }} on step_{{ step }}.derived_session_id = totals.derived_session_id
{%- endfor %}
{% if is_incremental() %}
where {{ local_date('totals.session_start') }} >= {{ recompute_from() }}
{% endif %}
