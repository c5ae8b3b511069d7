{#- Bot traffic, recognised by its user agent (case-insensitive substring match).

    The list: crawlers and link previewers that announce themselves (search engines, social
    networks' preview fetchers, SEO tools, monitoring), headless browsers, and HTTP libraries
    that no shopper's browser or app uses. Events without a user agent are not bots (server-side
    Segment calls often have none). Marts leave bot events out; staging keeps them, flagged. -#}
{% macro bot_user_agent_patterns() %}
    {{ return([
        'bot', 'crawl', 'spider', 'slurp', 'bingpreview', 'mediapartners-google',
        'facebookexternalhit', 'facebot', 'twitterbot', 'linkedinbot', 'embedly',
        'whatsapp', 'telegrambot', 'discordbot', 'slackbot', 'kakaotalk-scrap', 'yeti', 'daumoa',
        'ahrefs', 'semrush', 'mj12bot', 'dotbot', 'petalbot', 'bytespider', 'gptbot', 'ccbot',
        'headlesschrome', 'phantomjs', 'puppeteer', 'playwright', 'selenium', 'lighthouse',
        'pingdom', 'uptimerobot', 'statuscake', 'python-requests', 'python-urllib', 'aiohttp',
        'go-http-client', 'curl/', 'wget/', 'libwww-perl', 'java/',
        'scrapy', 'httpclient'
    ]) }}
{% endmacro %}

{% macro is_bot(user_agent) -%}
    coalesce(
        {%- for pattern in bot_user_agent_patterns() %}
        strpos(lower({{ user_agent }}), '{{ pattern }}') > 0{% if not loop.last %} or{% endif %}
        {%- endfor %}
    , false)
{%- endmacro %}
