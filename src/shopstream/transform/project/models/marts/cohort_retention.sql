{#- Customers by the month of their first order (business time zone, var('timezone')) and
    the months since: how many of a cohort ordered again. Every order placed counts, whatever
    its current status (placing an order is the activity retained). -#}
{{ config(
    enabled=shop_models_exist(['stg_orders']),
    materialized='table',
) }}

with orders as (
    select
        user_id,
        cast({{ dbt.date_trunc('month', shop_business_date('created_at')) }} as date) as order_month
    from {{ ref('stg_orders') }}
),

firsts as (
    select user_id, min(order_month) as cohort_month
    from orders
    group by user_id
),

cohorts as (
    select cohort_month, count(*) as cohort_customers
    from firsts
    group by cohort_month
),

active as (
    select distinct f.cohort_month, o.order_month, o.user_id
    from orders as o
    join firsts as f on f.user_id = o.user_id
),

retained as (
    select
        cohort_month,
        {{ dbt.datediff('cohort_month', 'order_month', 'month') }} as months_since,
        count(*) as customers
    from active
    group by cohort_month, order_month
)

select
    r.cohort_month,
    r.months_since,
    r.customers,
    c.cohort_customers,
    {{ shop_ratio('r.customers', 'c.cohort_customers', 4, numerator_scale=0) }} as retained_share
from retained as r
join cohorts as c on c.cohort_month = r.cohort_month
