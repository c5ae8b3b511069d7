{#- Layers are schemas (DuckDB) or datasets (BigQuery) named as they are: staging, mart,
    monitoring. dbt's default would prefix them with the target's schema. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
