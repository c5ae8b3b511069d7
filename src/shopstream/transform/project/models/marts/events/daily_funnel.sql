{#- Sessions per business day (session start, var('timezone')) and device reaching each step
    of page_view -> product_view -> add_to_cart -> begin_checkout -> purchase, a step counting
    only when it happened at or after the previous one in the same session (the *_at columns
    of sessions). Rates: each step over the step before; overall = purchase over page_view. -#}
{{ config(materialized='table') }}

{%- set steps = ['page_view', 'product_view', 'add_to_cart', 'begin_checkout', 'purchase'] %}

with counts as (
    select
        session_date,
        device_type,
        count(*) as sessions,
        {%- for step in steps %}
        sum(case when {{ step }}_at is not null then 1 else 0 end) as {{ step }}_sessions{% if not loop.last %},{% endif %}
        {%- endfor %}
    from {{ ref('sessions') }}
    group by session_date, device_type
)

select
    counts.*,
    {%- for step in steps[1:] %}
    {{ ratio(step ~ '_sessions', steps[loop.index0] ~ '_sessions') }} as {{ step }}_rate,
    {%- endfor %}
    {{ ratio('purchase_sessions', 'page_view_sessions') }} as overall_conversion_rate
from counts
