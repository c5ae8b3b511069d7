-- A copy of events_by_type; with RUNNER_TEST_SLOW_ROWS > 0 it first burns CPU in a cross join (the crash
-- test kills the platform while this model's transaction is open).
{% if env_var('RUNNER_TEST_BREAK_MODEL', '') == 'yes' %}
select * from no_such_table_on_purpose
{% else %}
select e.event_type, e.events
from {{ ref('events_by_type') }} as e
{% if env_var('RUNNER_TEST_SLOW_ROWS', '0') | int > 0 %}
cross join (
    select count(*) as burnt
    from range({{ env_var('RUNNER_TEST_SLOW_ROWS', '0') | int }}) as a, range({{ env_var('RUNNER_TEST_SLOW_ROWS', '0') | int }}) as b
    where (a.range * 7 + b.range) % 1000 = 3
) as slow
where slow.burnt >= 0
{% endif %}
{% endif %}
