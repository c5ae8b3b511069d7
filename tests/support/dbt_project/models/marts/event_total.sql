{{ config(materialized='incremental', unique_key='total_key') }}
-- An incremental model: merged by key on every run.
select 'all' as total_key, count(*) as events from {{ ref('stg_test_events') }}
