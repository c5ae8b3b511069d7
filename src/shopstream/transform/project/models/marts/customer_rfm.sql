{#- Recency, frequency and monetary value per customer from the shop database's orders,
    scored 1-5 on fixed, documented thresholds (deterministic: no NTILE, so a customer's score
    does not depend on the others'), and a named segment.

    Counted orders: those not CANCELLED or REFUNDED (any other current status).
    as_of_date: the newest business day (var('timezone')) on which any order was placed, so that
    a rebuild without new orders gives the same scores whatever the wall clock says.
    recency_score:   5 if recency_days <= 7, 4 if <= 30, 3 if <= 90, 2 if <= 180, else 1
    frequency_score: 5 if frequency >= 10, 4 if >= 5, 3 if >= 3, 2 if = 2, else 1
    monetary_score:  5 if monetary >= 1,000,000 won, 4 if >= 300,000, 3 if >= 100,000,
                     2 if >= 30,000, else 1
    segment (first that applies): champions (R >= 4, F >= 4, M >= 4), loyal (F >= 4),
    new (R >= 4, F = 1), promising (R >= 4), at_risk (R <= 2, F >= 3), hibernating (R <= 2),
    needs_attention (everyone else). -#}
{{ config(
    enabled=shop_models_exist(['stg_orders']),
    materialized='table',
    cluster_by=(['segment'] if target.type == 'bigquery' else none),
) }}

with orders as (
    select
        user_id,
        status,
        total_amount,
        {{ shop_business_date('created_at') }} as order_date
    from {{ ref('stg_orders') }}
),

as_of as (
    select max(order_date) as as_of_date from orders
),

customers as (
    select
        user_id,
        max(order_date) as last_order_date,
        count(*) as frequency,
        {{ shop_money('sum(total_amount)') }} as monetary
    from orders
    where status not in ('CANCELLED', 'REFUNDED')
    group by user_id
),

measured as (
    select
        c.user_id,
        a.as_of_date,
        c.last_order_date,
        {{ dbt.datediff('c.last_order_date', 'a.as_of_date', 'day') }} as recency_days,
        c.frequency,
        c.monetary
    from customers as c
    cross join as_of as a
),

scored as (
    select
        *,
        case
            when recency_days <= 7 then 5
            when recency_days <= 30 then 4
            when recency_days <= 90 then 3
            when recency_days <= 180 then 2
            else 1
        end as recency_score,
        case
            when frequency >= 10 then 5
            when frequency >= 5 then 4
            when frequency >= 3 then 3
            when frequency = 2 then 2
            else 1
        end as frequency_score,
        case
            when monetary >= 1000000 then 5
            when monetary >= 300000 then 4
            when monetary >= 100000 then 3
            when monetary >= 30000 then 2
            else 1
        end as monetary_score
    from measured
)

select
    *,
    case
        when recency_score >= 4 and frequency_score >= 4 and monetary_score >= 4 then 'champions'
        when frequency_score >= 4 then 'loyal'
        when recency_score >= 4 and frequency_score = 1 then 'new'
        when recency_score >= 4 then 'promising'
        when recency_score <= 2 and frequency_score >= 3 then 'at_risk'
        when recency_score <= 2 then 'hibernating'
        else 'needs_attention'
    end as segment
from scored
