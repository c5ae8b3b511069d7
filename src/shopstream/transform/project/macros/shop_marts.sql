{#- Helpers of the marts built from the shop database's staging (daily_sales, customer_rfm,
    cohort_retention). -#}

{#- Whether every one of `models` was generated (the workspace passes the generated staging
    models' names as var('captured_tables')): marts that need them are enabled only then. -#}
{% macro shop_models_exist(models) -%}
    {%- set captured = var('captured_tables', []) -%}
    {%- for model in models -%}
        {%- if model not in captured -%}{{ return(false) }}{%- endif -%}
    {%- endfor -%}
    {{ return(true) }}
{%- endmacro %}

{#- The business day (var('timezone')) of a UTC timestamp. -#}
{% macro shop_business_date(ts) -%}
    {{ return(adapter.dispatch('shop_business_date')(ts)) }}
{%- endmacro %}
{% macro default__shop_business_date(ts) -%}
    cast(timezone('{{ var("timezone") }}', {{ ts }}) as date)
{%- endmacro %}
{% macro bigquery__shop_business_date(ts) -%}
    DATE({{ ts }}, '{{ var("timezone") }}')
{%- endmacro %}

{#- An amount of money as the marts' exact decimal type (38 digits, 2 places on DuckDB;
    NUMERIC on BigQuery). -#}
{% macro shop_money(expression) -%}
    {{ return(adapter.dispatch('shop_money')(expression)) }}
{%- endmacro %}
{% macro default__shop_money(expression) -%}
    cast({{ expression }} as decimal(38, 2))
{%- endmacro %}
{% macro bigquery__shop_money(expression) -%}
    CAST({{ expression }} AS NUMERIC)
{%- endmacro %}

{#- numerator / denominator, exactly rounded half up to `scale` places, NULL when the
    denominator is 0. For a numerator >= 0 with at most `numerator_scale` decimal places
    (money: 2, counts: 0) and a whole denominator > 0. Never through a float: DuckDB divides
    decimals into DOUBLE, so the quotient is found in integer arithmetic. -#}
{% macro shop_ratio(numerator, denominator, scale, numerator_scale=2) -%}
    {{ return(adapter.dispatch('shop_ratio')(numerator, denominator, scale, numerator_scale)) }}
{%- endmacro %}
{% macro default__shop_ratio(numerator, denominator, scale, numerator_scale) -%}
    {%- set units = 10 ** numerator_scale -%}
    case when ({{ denominator }}) = 0 then null else
        cast(cast(
            (2 * cast(({{ numerator }}) * {{ units }} as hugeint) * {{ 10 ** scale }} + ({{ denominator }}) * {{ units }})
            // (2 * ({{ denominator }}) * {{ units }})
        as decimal(38, 0)) * {{ '1' if scale == 0 else '0.' ~ ('0' * (scale - 1)) ~ '1' }} as decimal(38, {{ scale }}))
    end
{%- endmacro %}
{% macro bigquery__shop_ratio(numerator, denominator, scale, numerator_scale) -%}
    CASE WHEN ({{ denominator }}) = 0 THEN NULL ELSE
        CAST(ROUND(CAST({{ numerator }} AS BIGNUMERIC) / ({{ denominator }}), {{ scale }}, 'ROUND_HALF_AWAY_FROM_ZERO') AS NUMERIC)
    END
{%- endmacro %}
