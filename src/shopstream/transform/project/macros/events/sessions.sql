{#- Sessionization and the incremental window of the events marts. -#}

{#- The first business day (var('timezone')) an incremental events mart recomputes: the day
    before the earliest event_day among the events received within var('lookback_days') days
    of the newest one in stg_events (the days late or new events touched). The day before,
    because an event just after midnight can extend a session that started the evening before.
    When the mart ({{ this }}) is empty (first built before any event arrived, or emptied by
    the pre-hook's delete) every day is recomputed: events older than the lookback would
    otherwise never reach it. The pre-hook that deletes those days and the model that rebuilds
    them agree (if the delete empties the mart, the model rebuilds everything, a superset).
    Assumes a non-empty mart is built at least once per lookback period (the embedded
    schedule runs every few minutes). -#}
{% macro recompute_from() -%}
    (
        select case
            when not exists (select 1 from {{ this }}) then cast('1900-01-01' as date)
            else (
                select {{ shift_date(-1, 'min(event_day)') }}
                from {{ ref('stg_events') }}
                where received_at > {{ received_window_start(ref('stg_events')) }}
            )
        end
    )
{%- endmacro %}

{#- The non-bot events of stg_events with their derived session: a visitor is
    coalesce(anonymous_id, user_id); a new session starts at a visitor's first event and after
    every gap of var('session_timeout_minutes') minutes or more without events. Events are
    ordered by (event_ts, event_id). session_id = md5(visitor_id || '|' || session start in
    epoch microseconds): the same events always give the same id, on any warehouse.
    `from_day` (a SQL date expression, optional) limits the events to event_day >= from_day. -#}
{% macro sessionized_events(from_day=none) %}
with visitor_events as (
    select
        stg_events.*,
        coalesce(anonymous_id, user_id) as visitor_id
    from {{ ref('stg_events') }} as stg_events
    where not is_bot
    {% if from_day is not none %}
      and event_day >= {{ from_day }}
    {% endif %}
),

gaps as (
    select
        visitor_events.*,
        case
            when lag(event_ts) over (partition by visitor_id order by event_ts, event_id) is null
                then 1
            when {{ shift_timestamp('minute', var('session_timeout_minutes'),
                                'lag(event_ts) over (partition by visitor_id order by event_ts, event_id)') }}
                 <= event_ts
                then 1
            else 0
        end as starts_session
    from visitor_events
),

numbered as (
    select
        gaps.*,
        sum(starts_session) over (
            partition by visitor_id order by event_ts, event_id
            rows between unbounded preceding and current row
        ) as visitor_session_number
    from gaps
),

started as (
    select
        numbered.*,
        min(event_ts) over (partition by visitor_id, visitor_session_number) as session_start
    from numbered
)

select
    started.*,
    {{ dbt.hash("visitor_id || '|' || cast(" ~ epoch_us('session_start') ~ " as " ~ dbt.type_string() ~ ")") }} as derived_session_id
from started
{% endmacro %}
