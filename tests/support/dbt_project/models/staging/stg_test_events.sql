-- One row per event_id, with the e-mail salt mixed into a hash (so tests can look for it).
select
    event_id,
    event_type,
    md5('{{ var("email_salt") }}' || coalesce(user_id, '')) as user_hash
from {{ source('raw', 'events') }}
qualify row_number() over (partition by event_id order by received_at) = 1
