{#- anonymous_id -> user_id, as Segment and RudderStack users expect: the latest user_id a
    device (anonymous_id) was seen with, from identify calls and from events sent while logged
    in, so that what the device did before logging in is attributed to the customer.
    Bot events do not link identities. -#}
{{ config(materialized='table') }}

with seen as (
    select
        anonymous_id,
        user_id,
        event_ts,
        event_id,
        event_type = 'custom' and event_name = 'identify' as is_identify
    from {{ ref('stg_events') }}
    where anonymous_id is not null and not is_bot
),

devices as (
    select anonymous_id, min(event_ts) as first_seen_at, max(event_ts) as last_seen_at
    from seen
    group by anonymous_id
),

links as (
    select
        anonymous_id,
        count(distinct user_id) as user_ids_seen,
        max(case when is_identify then 1 else 0 end) = 1 as identified_by_call
    from seen
    where user_id is not null
    group by anonymous_id
),

latest as (
    select anonymous_id, user_id
    from (
        select
            anonymous_id,
            user_id,
            row_number() over (partition by anonymous_id order by event_ts desc, event_id desc) as newest
        from seen
        where user_id is not null
    ) as ranked
    where newest = 1
)

select
    devices.anonymous_id,
    latest.user_id,
    devices.first_seen_at,
    devices.last_seen_at,
    coalesce(links.user_ids_seen, 0) as user_ids_seen,
    coalesce(links.identified_by_call, false) as identified_by_call
from devices
left join latest on latest.anonymous_id = devices.anonymous_id
left join links on links.anonymous_id = devices.anonymous_id
