//! Which REST routes reach each model command (the REST column of the coverage table).

use nanodb_protocol::CommandName::{self, *};

use crate::frontend::coverage::Reach::{self, No, Yes};

/// How REST reaches `c`: the routes that run it, as `METHOD /path` (OpenAPI's spelling).
pub fn reach(c: CommandName) -> Reach {
    match c {
        Ping => No("liveness is GET /healthz, readiness GET /readyz"),
        Get => Yes("GET /v1/kv/{key}"),
        Put => Yes("PUT /v1/kv/{key}"),
        Delete => Yes("DELETE /v1/kv/{key}"),
        DeleteIf => Yes("DELETE /v1/kv/{key} If-Match"),
        Incr => Yes("POST /v1/kv/{key}/incr"),
        Scan => Yes("GET /v1/kv"),
        Batch => Yes("POST /v1/batch"),
        HashSet => Yes("PUT /v1/hash/{key}/{field}"),
        HashGet => Yes("GET /v1/hash/{key}/{field}"),
        HashDelete => Yes("DELETE /v1/hash/{key}/{field}"),
        HashGetAll => Yes("GET /v1/hash/{key}"),
        ListPush => Yes("POST /v1/list/{key}"),
        ListPop => Yes("POST /v1/list/{key}/pop"),
        ListRange => Yes("GET /v1/list/{key}"),
        Publish => Yes("POST /v1/publish/{channel}"),
        GetSet | Exists | Expire | Ttl | KeyCount | GetDel | GetEx | Append | IncrFloat | MultiPut
        | Rename | Type | Flush | RandomKey | HashIncr | HashSetIfAbsent | HashLen | ListLen | ListSet
        | ListTrim => No("not mapped yet"),
    }
}
