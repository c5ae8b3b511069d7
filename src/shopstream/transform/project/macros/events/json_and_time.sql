{#- What DuckDB and BigQuery spell differently, for the events models. -#}

{#- A scalar of a JSON text column as a string (null when absent or JSON null). -#}
{% macro json_text(column, path) %}{{ return(adapter.dispatch('json_text', 'shopstream')(column, path)) }}{% endmacro %}
{% macro default__json_text(column, path) %}json_extract_string({{ column }}, '{{ path }}'){% endmacro %}
{% macro bigquery__json_text(column, path) %}json_value({{ column }}, '{{ path }}'){% endmacro %}

{#- A JSON array's elements become rows: a join clause, and the element / its 0-based index.
    `alias` names the join; use json_element(alias) and json_element_index(alias). -#}
{% macro json_elements_join(column, path, alias) %}{{ return(adapter.dispatch('json_elements_join', 'shopstream')(column, path, alias)) }}{% endmacro %}
{% macro default__json_elements_join(column, path, alias) -%}
    cross join unnest(json_extract({{ column }}, '{{ path }}[*]')) with ordinality as {{ alias }}(element, position)
{%- endmacro %}
{% macro bigquery__json_elements_join(column, path, alias) -%}
    cross join unnest(json_query_array({{ column }}, '{{ path }}')) as {{ alias }}_element with offset as {{ alias }}_index
{%- endmacro %}
{% macro json_element(alias) %}{{ return(adapter.dispatch('json_element', 'shopstream')(alias)) }}{% endmacro %}
{% macro default__json_element(alias) %}cast({{ alias }}.element as varchar){% endmacro %}
{% macro bigquery__json_element(alias) %}{{ alias }}_element{% endmacro %}
{% macro json_element_index(alias) %}{{ return(adapter.dispatch('json_element_index', 'shopstream')(alias)) }}{% endmacro %}
{% macro default__json_element_index(alias) %}cast({{ alias }}.position - 1 as bigint){% endmacro %}
{% macro bigquery__json_element_index(alias) %}{{ alias }}_index{% endmacro %}

{#- The calendar day of a UTC timestamp in the shop's time zone, var('timezone'). -#}
{% macro local_date(ts) %}{{ return(adapter.dispatch('local_date', 'shopstream')(ts)) }}{% endmacro %}
{% macro default__local_date(ts) %}cast(timezone('{{ var("timezone") }}', {{ ts }}) as date){% endmacro %}
{% macro bigquery__local_date(ts) %}date({{ ts }}, '{{ var("timezone") }}'){% endmacro %}

{#- Microseconds since the epoch: a time as a stable number (text forms differ per warehouse
    and, in DuckDB, with the session's time zone). -#}
{% macro epoch_us(ts) %}{{ return(adapter.dispatch('epoch_us', 'shopstream')(ts)) }}{% endmacro %}
{% macro default__epoch_us(ts) %}epoch_us({{ ts }}){% endmacro %}
{% macro bigquery__epoch_us(ts) %}unix_micros({{ ts }}){% endmacro %}

{#- Exact money: every amount in the events marts has this type. -#}
{% macro money_type() %}{{ return(adapter.dispatch('money_type', 'shopstream')()) }}{% endmacro %}
{% macro default__money_type() %}decimal(18, 4){% endmacro %}
{% macro bigquery__money_type() %}numeric{% endmacro %}

{#- The text cast to a type, null if it does not parse. Not dbt.safe_cast: on DuckDB that is a
    plain cast, which fails the whole build on one bad value. -#}
{% macro try_number(expr, type) %}{{ return(adapter.dispatch('try_number', 'shopstream')(expr, type)) }}{% endmacro %}
{% macro default__try_number(expr, type) %}try_cast({{ expr }} as {{ type }}){% endmacro %}
{% macro bigquery__try_number(expr, type) %}safe_cast({{ expr }} as {{ type }}){% endmacro %}

{#- The text when it is a valid JSON document, else null (JSON functions fail on bad text). -#}
{% macro json_if_valid(column) %}{{ return(adapter.dispatch('json_if_valid', 'shopstream')(column)) }}{% endmacro %}
{% macro default__json_if_valid(column) %}case when json_valid({{ column }}) then {{ column }} end{% endmacro %}
{% macro bigquery__json_if_valid(column) %}case when safe.parse_json({{ column }}) is not null then {{ column }} end{% endmacro %}

{#- numerator / denominator as a floating-point rate, null when the denominator is 0. -#}
{% macro ratio(numerator, denominator) %}{{ return(adapter.dispatch('ratio', 'shopstream')(numerator, denominator)) }}{% endmacro %}
{% macro default__ratio(numerator, denominator) %}(cast({{ numerator }} as double) / nullif({{ denominator }}, 0)){% endmacro %}
{% macro bigquery__ratio(numerator, denominator) %}safe_divide({{ numerator }}, {{ denominator }}){% endmacro %}

{#- A JSON column as text with a total order (to break ties deterministically). -#}
{% macro json_as_text(column) %}{{ return(adapter.dispatch('json_as_text', 'shopstream')(column)) }}{% endmacro %}
{% macro default__json_as_text(column) %}cast({{ column }} as varchar){% endmacro %}
{% macro bigquery__json_as_text(column) %}to_json_string({{ column }}){% endmacro %}
