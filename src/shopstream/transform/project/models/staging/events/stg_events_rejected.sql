{#- The raw events kept out of stg_events: one row per event_id with the rule it breaks.
    Nothing the collector stored disappears without being counted here. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key='event_id',
    partition_by=({'field': 'event_date', 'data_type': 'date'} if target.type == 'bigquery' else none),
) }}

with checked as (
    {{ events_typed(this, [this, ref('stg_events')] if is_incremental() else [ref('stg_events')]) }}
)

select
    event_id,
    event_type,
    event_ts,
    received_at,
    event_date,
    source,
    reject_reason as reason,
    {{ redact_emails('raw_properties') }} as properties
from checked
where reject_reason is not null
