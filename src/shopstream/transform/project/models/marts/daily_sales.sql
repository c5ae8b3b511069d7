{#- Sales per business day (var('timezone')) x product category x delivery type, from the
    shop database's current state. An order counts in every category it has a line in. -#}
{{ config(
    enabled=shop_models_exist(['stg_orders', 'stg_order_items', 'stg_products']),
    materialized='table',
    partition_by=({'field': 'order_date', 'data_type': 'date', 'granularity': 'day'} if target.type == 'bigquery' else none),
    cluster_by=(['category', 'delivery_type'] if target.type == 'bigquery' else none),
) }}

with orders as (
    select
        order_id,
        user_id,
        status,
        delivery_type,
        {{ shop_business_date('created_at') }} as order_date
    from {{ ref('stg_orders') }}
),

lines as (
    select
        o.order_date,
        p.category,
        o.delivery_type,
        o.order_id,
        o.user_id,
        o.status,
        i.quantity,
        i.quantity * i.unit_price as line_revenue
    from {{ ref('stg_order_items') }} as i
    join orders as o on o.order_id = i.order_id
    join {{ ref('stg_products') }} as p on p.product_id = i.product_id
),

daily as (
    select
        order_date,
        category,
        delivery_type,
        count(distinct order_id) as orders,
        count(distinct user_id) as customers,
        sum(quantity) as items,
        {{ shop_money('sum(line_revenue)') }} as gross_revenue,
        count(distinct case when status = 'CANCELLED' then order_id end) as cancelled_orders,
        {{ shop_money("coalesce(sum(case when status = 'CANCELLED' then line_revenue end), 0)") }} as cancelled_revenue,
        count(distinct case when status = 'REFUNDED' then order_id end) as refunded_orders,
        {{ shop_money("coalesce(sum(case when status = 'REFUNDED' then line_revenue end), 0)") }} as refunded_revenue
    from lines
    group by order_date, category, delivery_type
)

select
    order_date,
    category,
    delivery_type,
    orders,
    customers,
    items,
    gross_revenue,
    cancelled_orders,
    cancelled_revenue,
    refunded_orders,
    refunded_revenue,
    {{ shop_money('gross_revenue - cancelled_revenue - refunded_revenue') }} as net_revenue,
    {{ shop_ratio('gross_revenue - cancelled_revenue - refunded_revenue', 'orders - cancelled_orders - refunded_orders', 2) }} as aov
from daily
