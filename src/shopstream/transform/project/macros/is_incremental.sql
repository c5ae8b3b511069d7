{#- The BigQuery compile check (tests) renders every model without a warehouse to ask: the var
    `compile_as` ('full' or 'incremental') answers what dbt would otherwise learn by looking
    for the model's table. Unset, dbt decides as usual. -#}
{% macro is_incremental() %}
    {%- if var('compile_as', none) is not none -%}
        {{ return(var('compile_as') == 'incremental') }}
    {%- else -%}
        {{ return(dbt.is_incremental()) }}
    {%- endif -%}
{% endmacro %}
