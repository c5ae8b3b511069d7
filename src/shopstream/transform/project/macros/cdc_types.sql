{#- Typing of CDC values: the change envelope's JSON (shopstream.cdc.values) -> warehouse types.

    A column's value is read from the raw row's JSON (after / before / key) as a JSON
    fragment (cdc_json_fragment), then typed from its PostgreSQL base type (cdc_typed).

    PostgreSQL base_type              DuckDB                     BigQuery
    smallint integer bigint oid       BIGINT                     INT64
    numeric(p,s)                      DECIMAL(p,s) (p <= 38,     NUMERIC(p,s) when p-s <= 29 and
                                      else VARCHAR)              s <= 9, BIGNUMERIC(p,s) when
                                                                 p-s <= 38 and s <= 38, else STRING
    numeric (no typmod)               DECIMAL(38,9)              NUMERIC (= 38 digits, 9 places)
    money                             DECIMAL(38,2)              BIGNUMERIC(38,2)
    real, double precision            DOUBLE                     FLOAT64 (NaN, +-Infinity kept)
    boolean                           BOOLEAN                    BOOL
    json, jsonb                       JSON                       JSON
    any array (type ends in [])       JSON (the list)            JSON
    date                              DATE                       DATE
    timestamp with time zone          TIMESTAMPTZ (an instant)   TIMESTAMP
    timestamp without time zone       TIMESTAMP                  DATETIME
    time without time zone            TIME                       TIME
    bytea                             BLOB (from base64)         BYTES (from base64)
    anything else (text, varchar,     VARCHAR                    STRING
    char, uuid, enum, interval,
    timetz, inet, xml, ...)

    Numeric without a type modifier has no fixed scale; DECIMAL(38,9) is BigQuery's NUMERIC, so
    both warehouses hold the same values. Never a silent wrong value: a value the target type
    cannot hold exactly (numeric NaN or +-Infinity, more than 29 integer or 9 fractional digits
    in an unconstrained numeric, 'infinity' dates and timestamps, years outside 1..9999, a
    time of 24:00:00 on BigQuery) is NULL in the typed column and the row names the column in
    _cdc_untyped_columns (cdc_staging.sql). Numeric is checked by pattern and cast from its
    decimal text, never through a float.
-#}

{#- The name of a JSON member as a JSONPath both warehouses read: $.name or $."odd name". -#}
{% macro cdc_json_path(name) -%}
    {%- if '"' in name or "'" in name or '\\' in name -%}
        {{ exceptions.raise_compiler_error("column " ~ name ~ " has a quote or backslash in its name: shopstream's CDC staging cannot address it in JSON") }}
    {%- endif -%}
    {%- if modules.re.match('^[A-Za-z_][A-Za-z0-9_]*$', name) -%}$.{{ name }}{%- else -%}$."{{ name }}"{%- endif -%}
{%- endmacro %}

{#- The member `name` of the JSON column `json_column`, as JSON (SQL NULL when absent). -#}
{% macro cdc_json_fragment(json_column, name) -%}
    {{ return(adapter.dispatch('cdc_json_fragment')(json_column, name)) }}
{%- endmacro %}
{% macro default__cdc_json_fragment(json_column, name) -%}
    json_extract({{ json_column }}, '{{ cdc_json_path(name) }}')
{%- endmacro %}
{% macro bigquery__cdc_json_fragment(json_column, name) -%}
    JSON_QUERY({{ json_column }}, '{{ cdc_json_path(name) }}')
{%- endmacro %}

{#- A JSON fragment's scalar as text: a string unquoted, a number or boolean as written;
    NULL for JSON null. -#}
{% macro cdc_json_text(fragment) -%}
    {{ return(adapter.dispatch('cdc_json_text')(fragment)) }}
{%- endmacro %}
{% macro default__cdc_json_text(fragment) -%}
    json_extract_string({{ fragment }}, '$')
{%- endmacro %}
{% macro bigquery__cdc_json_text(fragment) -%}
    JSON_VALUE({{ fragment }})
{%- endmacro %}

{#- A JSON fragment kept as JSON, with JSON null as SQL NULL. -#}
{% macro cdc_json_or_null(fragment) -%}
    {{ return(adapter.dispatch('cdc_json_or_null')(fragment)) }}
{%- endmacro %}
{% macro default__cdc_json_or_null(fragment) -%}
    case when json_type({{ fragment }}) = 'NULL' then null else {{ fragment }} end
{%- endmacro %}
{% macro bigquery__cdc_json_or_null(fragment) -%}
    case when JSON_TYPE({{ fragment }}) = 'null' then null else {{ fragment }} end
{%- endmacro %}

{#- What a PostgreSQL base type (format_type text) becomes: a dict with `kind` and, for
    decimals, `precision` and `scale`. Plain Jinja: the same on every warehouse. -#}
{% macro cdc_type_kind(base_type) -%}
    {%- set t = base_type | trim | lower -%}
    {%- set numeric = modules.re.match('^numeric\\((\\d+)(?:,\\s*(-?\\d+))?\\)$', t) -%}
    {%- if t.endswith('[]') -%}{{ return({'kind': 'array'}) }}
    {%- elif t in ('smallint', 'integer', 'bigint', 'oid', 'int2', 'int4', 'int8') -%}{{ return({'kind': 'integer'}) }}
    {%- elif numeric -%}
        {%- set p = numeric.group(1) | int -%}
        {%- set s = (numeric.group(2) or '0') | int -%}
        {%- if s < 0 or s > p -%}{{ return({'kind': 'string'}) }}{%- endif -%}
        {{ return({'kind': 'decimal', 'precision': p, 'scale': s, 'padded': false}) }}
    {%- elif t == 'numeric' -%}{{ return({'kind': 'decimal', 'precision': 38, 'scale': 9, 'padded': true}) }}
    {%- elif t == 'money' -%}{{ return({'kind': 'decimal', 'precision': 38, 'scale': 2, 'padded': false}) }}
    {%- elif t in ('real', 'double precision', 'float4', 'float8') -%}{{ return({'kind': 'float'}) }}
    {%- elif t in ('boolean', 'bool') -%}{{ return({'kind': 'bool'}) }}
    {%- elif t in ('json', 'jsonb') -%}{{ return({'kind': 'json'}) }}
    {%- elif t == 'date' -%}{{ return({'kind': 'date'}) }}
    {%- elif modules.re.match('^timestamp(\\(\\d\\))? with time zone$', t) or t == 'timestamptz' -%}{{ return({'kind': 'timestamptz'}) }}
    {%- elif modules.re.match('^timestamp(\\(\\d\\))?( without time zone)?$', t) -%}{{ return({'kind': 'timestamp'}) }}
    {%- elif modules.re.match('^time(\\(\\d\\))?( without time zone)?$', t) -%}{{ return({'kind': 'time'}) }}
    {%- elif t == 'bytea' -%}{{ return({'kind': 'bytes'}) }}
    {%- else -%}{{ return({'kind': 'string'}) }}
    {%- endif -%}
{%- endmacro %}

{#- Whether a PostgreSQL type can be TOASTed (variable length), so that an update may carry
    the unchanged-TOAST placeholder for it: everything but the fixed-width types. -#}
{% macro cdc_toastable(base_type) -%}
    {%- set kind = cdc_type_kind(base_type)['kind'] -%}
    {%- set t = base_type | trim | lower -%}
    {{ return(kind not in ('integer', 'float', 'bool', 'date', 'timestamptz', 'timestamp', 'time') and t not in ('money', 'uuid', 'interval')) }}
{%- endmacro %}

{#- A decimal's text matches this when it fits DECIMAL(p,s) exactly (PostgreSQL prints no
    exponent; an unconstrained numeric may carry trailing zeros past the 9 places). -#}
{% macro cdc_decimal_pattern(kind) -%}
    {%- set p = kind['precision'] -%}{%- set s = kind['scale'] -%}
    {%- set whole = [p - s, 1] | max -%}
    {%- if s == 0 -%}^-?[0-9]{1,{{ whole }}}{%- if kind['padded'] -%}(\.0*)?{%- endif -%}$
    {%- else -%}^-?[0-9]{1,{{ whole }}}(\.[0-9]{0,{{ s }}}{%- if kind['padded'] -%}0*{%- endif -%})?$
    {%- endif -%}
{%- endmacro %}

{#- A date or timestamp text the warehouses hold: years 0001..9999 only, no 'infinity'. -#}
{% macro cdc_plain_date_pattern() -%}^[0-9]{4}-[0-9]{2}-[0-9]{2}{%- endmacro %}

{#- The typed value of a JSON fragment, from the column's PostgreSQL base type. -#}
{% macro cdc_typed(fragment, base_type) -%}
    {{ return(adapter.dispatch('cdc_typed')(fragment, base_type)) }}
{%- endmacro %}

{% macro default__cdc_typed(fragment, base_type) -%}
    {%- set kind = cdc_type_kind(base_type) -%}
    {%- set text = cdc_json_text(fragment) -%}
    {%- set k = kind['kind'] -%}
    {%- if k == 'array' -%}{{ cdc_json_or_null(fragment) }}
    {%- elif k == 'integer' -%}try_cast({{ text }} as bigint)
    {%- elif k == 'decimal' and kind['precision'] <= 38 -%}
        case when regexp_full_match({{ text }}, '{{ cdc_decimal_pattern(kind) }}') then cast({{ text }} as decimal({{ kind['precision'] }}, {{ kind['scale'] }})) end
    {%- elif k == 'float' -%}try_cast({{ text }} as double)
    {%- elif k == 'bool' -%}try_cast({{ text }} as boolean)
    {%- elif k == 'json' -%}try_cast({{ text }} as json)
    {%- elif k == 'date' -%}
        case when regexp_full_match({{ text }}, '{{ cdc_plain_date_pattern() }}') then try_cast({{ text }} as date) end
    {%- elif k == 'timestamptz' -%}
        case when regexp_full_match({{ text }}, '{{ cdc_plain_date_pattern() }}T.*Z') then try_cast({{ text }} as timestamptz) end
    {%- elif k == 'timestamp' -%}
        case when regexp_full_match({{ text }}, '{{ cdc_plain_date_pattern() }}T.*Z') then try_cast(rtrim({{ text }}, 'Z') as timestamp) end
    {%- elif k == 'time' -%}case when {{ text }} < '24' then try_cast({{ text }} as time) end
    {%- elif k == 'bytes' -%}from_base64({{ text }})
    {%- else -%}{{ text }}
    {%- endif -%}
{%- endmacro %}

{% macro bigquery__cdc_typed(fragment, base_type) -%}
    {%- set kind = cdc_type_kind(base_type) -%}
    {%- set text = cdc_json_text(fragment) -%}
    {%- set k = kind['kind'] -%}
    {%- if k == 'array' -%}{{ cdc_json_or_null(fragment) }}
    {%- elif k == 'integer' -%}SAFE_CAST({{ text }} AS INT64)
    {%- elif k == 'decimal' and kind['precision'] - kind['scale'] <= 38 and kind['scale'] <= 38 -%}
        {%- set p = kind['precision'] -%}{%- set s = kind['scale'] -%}
        {%- set fits_numeric = (p - s <= 29 and s <= 9) -%}
        {%- if kind['padded'] -%}{%- set target = 'NUMERIC' -%}
        {%- elif fits_numeric -%}{%- set target = 'NUMERIC(' ~ p ~ ', ' ~ s ~ ')' -%}
        {%- else -%}{%- set target = 'BIGNUMERIC(' ~ p ~ ', ' ~ s ~ ')' -%}
        {%- endif -%}
        CASE WHEN REGEXP_CONTAINS({{ text }}, r'{{ cdc_decimal_pattern(kind) }}') THEN CAST({{ text }} AS {{ target }}) END
    {%- elif k == 'float' -%}SAFE_CAST({{ text }} AS FLOAT64)
    {%- elif k == 'bool' -%}SAFE_CAST({{ text }} AS BOOL)
    {%- elif k == 'json' -%}SAFE.PARSE_JSON({{ text }})
    {%- elif k == 'date' -%}
        CASE WHEN REGEXP_CONTAINS({{ text }}, r'{{ cdc_plain_date_pattern() }}$') THEN SAFE_CAST({{ text }} AS DATE) END
    {%- elif k == 'timestamptz' -%}
        CASE WHEN REGEXP_CONTAINS({{ text }}, r'{{ cdc_plain_date_pattern() }}T') THEN SAFE.PARSE_TIMESTAMP('%Y-%m-%dT%H:%M:%E*SZ', {{ text }}) END
    {%- elif k == 'timestamp' -%}
        CASE WHEN REGEXP_CONTAINS({{ text }}, r'{{ cdc_plain_date_pattern() }}T') THEN SAFE.PARSE_DATETIME('%Y-%m-%dT%H:%M:%E*SZ', {{ text }}) END
    {%- elif k == 'time' -%}SAFE_CAST({{ text }} AS TIME)
    {%- elif k == 'bytes' -%}SAFE.FROM_BASE64({{ text }})
    {%- else -%}{{ text }}
    {%- endif -%}
{%- endmacro %}
