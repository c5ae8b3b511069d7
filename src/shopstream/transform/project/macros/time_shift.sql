{#- Moving a time by a number of units, keeping its type. dbt.dateadd turns its argument into a
    DATETIME on BigQuery, which BigQuery then refuses to compare with a TIMESTAMP column (and
    stg_events' received_at, event_ts, the CDC times are TIMESTAMPs there): these macros keep a
    TIMESTAMP a TIMESTAMP and a DATE a DATE on every warehouse. -#}

{#- `ts` (a TIMESTAMP expression) moved by `amount` (an integer expression) `datepart`s
    (microsecond ... day). -#}
{% macro shift_timestamp(datepart, amount, ts) -%}
    {{ return(adapter.dispatch('shift_timestamp', 'shopstream')(datepart, amount, ts)) }}
{%- endmacro %}

{% macro default__shift_timestamp(datepart, amount, ts) -%}
    {{ dbt.dateadd(datepart, amount, ts) }}
{%- endmacro %}

{% macro bigquery__shift_timestamp(datepart, amount, ts) -%}
    timestamp_add({{ ts }}, interval ({{ amount }}) {{ datepart }})
{%- endmacro %}

{#- `day` (a DATE expression) moved by `amount` days, still a DATE. -#}
{% macro shift_date(amount, day) -%}
    {{ return(adapter.dispatch('shift_date', 'shopstream')(amount, day)) }}
{%- endmacro %}

{% macro default__shift_date(amount, day) -%}
    cast({{ dbt.dateadd('day', amount, day) }} as date)
{%- endmacro %}

{% macro bigquery__shift_date(amount, day) -%}
    date_add({{ day }}, interval ({{ amount }}) day)
{%- endmacro %}
