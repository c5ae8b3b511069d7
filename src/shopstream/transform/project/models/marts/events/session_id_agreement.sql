{#- How far the tracker's own session ids agree with the derived sessions, per business day
    (of the tracker session's first event) and device. A tracker session *agrees* when all its
    events fall into exactly one derived session and that derived session holds no event of
    another tracker session (one-to-one). `split` tracker sessions span several derived
    sessions (a pause longer than the timeout inside them); `merged` ones share a derived
    session with another tracker session (the tracker started a new session within the
    timeout). agreement_rate = agreeing / tracker_sessions. Events without a session_id
    (Segment without one) are not counted. A table over all non-bot events. -#}
{{ config(materialized='table') }}

with events as (
    {{ sessionized_events() }}
),

tracked as (
    select session_id as tracker_session_id, derived_session_id, event_ts, device_type
    from events
    where session_id is not null
),

per_tracker as (
    select
        tracker_session_id,
        count(distinct derived_session_id) as derived_sessions,
        min(event_ts) as started_at
    from tracked
    group by tracker_session_id
),

per_derived as (
    select derived_session_id, count(distinct tracker_session_id) as tracker_sessions
    from tracked
    group by derived_session_id
),

tracker_device as (
    select tracker_session_id, device_type
    from (
        select tracker_session_id, device_type,
               row_number() over (partition by tracker_session_id order by event_ts) as n
        from tracked
    ) as ranked
    where n = 1
),

merged as (
    -- tracker sessions with an event in a derived session shared with another tracker session
    select distinct tracked.tracker_session_id
    from tracked
    inner join per_derived on per_derived.derived_session_id = tracked.derived_session_id
    where per_derived.tracker_sessions > 1
),

classified as (
    select
        {{ local_date('per_tracker.started_at') }} as session_date,
        tracker_device.device_type,
        per_tracker.derived_sessions > 1 as is_split,
        merged.tracker_session_id is not null as is_merged
    from per_tracker
    left join tracker_device on tracker_device.tracker_session_id = per_tracker.tracker_session_id
    left join merged on merged.tracker_session_id = per_tracker.tracker_session_id
)

select
    session_date,
    device_type,
    count(*) as tracker_sessions,
    sum(case when not is_split and not is_merged then 1 else 0 end) as agreeing_sessions,
    sum(case when is_split then 1 else 0 end) as split_sessions,
    sum(case when is_merged then 1 else 0 end) as merged_sessions,
    {{ ratio('sum(case when not is_split and not is_merged then 1 else 0 end)', 'count(*)') }} as agreement_rate
from classified
group by session_date, device_type
