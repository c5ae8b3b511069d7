{#- Privacy in staging: no full IP address and no readable e-mail address leaves raw.

    truncate_ip: IPv4 keeps its /24 (203.0.113.7 -> 203.0.113.0), IPv6 its /48 (the first three
    groups, in canonical form: 2001:db8:85a3::). Anything else (not an address) becomes null rather than
    being kept as it came. Known limit: an IPv6 address ending in an embedded IPv4 part
    (::ffff:1.2.3.4) counts that part as one group; its /48 is all zeros either way.

    hash_email: sha256 hex of var('email_salt') || lower(trim(value)), for values that look like
    an e-mail address (something@something.tld); anything else passes unchanged. The same address
    always gives the same hash (joins keep working), and without the salt it cannot be guessed
    from a list of addresses. -#}

{% macro email_regex() %}{{ return('^[^@ ]+@[^@ ]+[.][^@ ]+$') }}{% endmacro %}
{% macro email_anywhere_regex() %}{{ return('[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+[.][A-Za-z]{2,}') }}{% endmacro %}

{% macro sha256_hex(expr) %}{{ return(adapter.dispatch('sha256_hex', 'shopstream')(expr)) }}{% endmacro %}
{% macro default__sha256_hex(expr) %}sha256({{ expr }}){% endmacro %}
{% macro bigquery__sha256_hex(expr) %}to_hex(sha256({{ expr }})){% endmacro %}

{% macro regex_matches(expr, pattern) %}{{ return(adapter.dispatch('regex_matches', 'shopstream')(expr, pattern)) }}{% endmacro %}
{% macro default__regex_matches(expr, pattern) %}regexp_matches({{ expr }}, '{{ pattern }}'){% endmacro %}
{% macro bigquery__regex_matches(expr, pattern) %}regexp_contains({{ expr }}, r'{{ pattern }}'){% endmacro %}

{#- Every match of `pattern` replaced by `replacement` (a literal). -#}
{% macro regex_replace_all(expr, pattern, replacement) %}{{ return(adapter.dispatch('regex_replace_all', 'shopstream')(expr, pattern, replacement)) }}{% endmacro %}
{% macro default__regex_replace_all(expr, pattern, replacement) %}regexp_replace({{ expr }}, '{{ pattern }}', '{{ replacement }}', 'g'){% endmacro %}
{% macro bigquery__regex_replace_all(expr, pattern, replacement) %}regexp_replace({{ expr }}, r'{{ pattern }}', '{{ replacement }}'){% endmacro %}

{% macro hash_email(expr) -%}
    case
        when {{ regex_matches('trim(' ~ expr ~ ')', email_regex()) }}
            then {{ sha256_hex("'" ~ var('email_salt') ~ "' || lower(trim(" ~ expr ~ "))") }}
        else {{ expr }}
    end
{%- endmacro %}

{#- A JSON text with every e-mail-like substring replaced by the marker "[email]": the typed
    columns carry the hashes; the leftover JSON keeps no address at all. -#}
{% macro redact_emails(expr) -%}
    {{ regex_replace_all(expr, email_anywhere_regex(), '[email]') }}
{%- endmacro %}

{% macro truncate_ip(expr) %}{{ return(adapter.dispatch('truncate_ip', 'shopstream')(expr)) }}{% endmacro %}

{% macro default__truncate_ip(expr) -%}
    case
        when regexp_matches({{ expr }}, '^[0-9]{1,3}([.][0-9]{1,3}){3}$')
            then regexp_replace({{ expr }}, '[.][0-9]{1,3}$', '.0')
        when regexp_matches({{ expr }}, '^[0-9A-Fa-f:.]+$') and strpos({{ expr }}, ':') > 0
            then (
                -- expand '::' to the zero groups it stands for, then keep the first three
                with parts as (
                    select
                        case when strpos({{ expr }}, '::') > 0 then split_part({{ expr }}, '::', 1) else {{ expr }} end as head,
                        case when strpos({{ expr }}, '::') > 0 then split_part({{ expr }}, '::', 2) else '' end as tail
                ), groups as (
                    select
                        case when head = '' then []::varchar[] else string_split(head, ':') end as h,
                        case when tail = '' then []::varchar[] else string_split(tail, ':') end as t
                    from parts
                )
                -- canonical form, as BigQuery's NET.IP_TO_STRING writes it: trailing zero
                -- groups fold into the '::' (2001:db8:0:: -> 2001:db8::, 0:0:0:: -> ::)
                select regexp_replace(array_to_string(
                    list_transform(
                        (h || list_transform(range(greatest(0, 8 - len(h) - len(t))), lambda x: '0') || t)[1:3],
                        lambda g: coalesce(nullif(ltrim(lower(g), '0'), ''), '0')
                    ), ':'), '(^|:)0(:0)*$', '') || '::'
                from groups
            )
    end
{%- endmacro %}

{% macro bigquery__truncate_ip(expr) -%}
    case
        when regexp_contains({{ expr }}, r'^[0-9]{1,3}([.][0-9]{1,3}){3}$')
            then net.ip_to_string(net.ip_trunc(net.safe_ip_from_string({{ expr }}), 24))
        when strpos({{ expr }}, ':') > 0
            then net.ip_to_string(net.ip_trunc(net.safe_ip_from_string({{ expr }}), 48))
    end
{%- endmacro %}
