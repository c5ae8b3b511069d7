-- Fails on purpose with RUNNER_TEST_FAIL_TEST=yes: finds the page_view rows of events_by_type.
select * from {{ ref('events_by_type') }}
where {{ 'true' if env_var('RUNNER_TEST_FAIL_TEST', '') == 'yes' else 'false' }} and event_type = 'page_view'
