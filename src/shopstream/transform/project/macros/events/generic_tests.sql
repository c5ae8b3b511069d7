{#- Generic tests the events models use (no dbt_utils here: nothing can be downloaded). -#}

{#- No two rows share the values of `columns` (a composite key). -#}
{% test unique_key_columns(model, columns) %}
select {{ columns | join(', ') }}, count(*) as copies
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}

{#- The column is never below zero (nulls pass: not_null says whether they may exist). -#}
{% test non_negative(model, column_name) %}
select {{ column_name }} from {{ model }} where {{ column_name }} < 0
{% endtest %}

{#- A rate lies between 0 and 1 (nulls pass). -#}
{% test between_zero_and_one(model, column_name) %}
select {{ column_name }} from {{ model }} where {{ column_name }} < 0 or {{ column_name }} > 1
{% endtest %}
