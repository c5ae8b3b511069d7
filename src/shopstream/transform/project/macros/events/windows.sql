{#- The incremental windows of the events models. -#}

{#- The start of an incremental window over received_at: max(`column`) of `relation` (the
    model's own table) minus var('lookback_days') days. An empty table (first built before any
    event arrived) has no max: the window then starts in the far past, so the first events
    are taken instead of compared with null (which would keep the model empty for ever). -#}
{% macro received_window_start(relation, column='received_at') -%}
    coalesce(
        (
            select {{ shift_timestamp('day', -1 * var('lookback_days'), 'max(' ~ column ~ ')') }}
            from {{ relation }}
        ),
        cast('1900-01-01 00:00:00' as {{ dbt.type_timestamp() }})
    )
{%- endmacro %}
