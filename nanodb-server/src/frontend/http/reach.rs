//! Which REST routes reach each model command (the REST column of the coverage table).

use nanodb_protocol::CommandName::{self, *};

use crate::frontend::coverage::Reach::{self, No, Yes};

/// How REST reaches `c`: the routes that run it, as `METHOD /path` (OpenAPI's spelling).
pub fn reach(c: CommandName) -> Reach {
    match c {
        Ping => No("liveness is GET /healthz, readiness GET /readyz"),
        Get => Yes("GET /v1/kv/{key}"),
        Put => Yes("PUT /v1/kv/{key}"),
        GetSet => Yes("POST /v1/kv/{key}/getset"),
        Delete => Yes("DELETE /v1/kv/{key}"),
        DeleteIf => Yes("DELETE /v1/kv/{key} If-Match"),
        Exists => Yes("GET /v1/kv/{key}/exists"),
        Incr => Yes("POST /v1/kv/{key}/incr"),
        Expire => Yes("POST /v1/kv/{key}/expire"),
        Ttl => Yes("GET /v1/kv/{key}/ttl"),
        Scan => Yes("GET /v1/kv"),
        Batch => Yes("POST /v1/batch"),
        HashSet => Yes("PUT /v1/hash/{key}/{field}"),
        HashGet => Yes("GET /v1/hash/{key}/{field}"),
        HashDelete => Yes("DELETE /v1/hash/{key}/{field}"),
        HashGetAll => Yes("GET /v1/hash/{key}"),
        ListPush => Yes("POST /v1/list/{key}"),
        ListPop => Yes("POST /v1/list/{key}/pop"),
        ListRange => Yes("GET /v1/list/{key}"),
        KeyCount => Yes("GET /v1/keyspace/count"),
        GetDel => Yes("POST /v1/kv/{key}/getdel"),
        GetEx => Yes("POST /v1/kv/{key}/getex"),
        Append => Yes("POST /v1/kv/{key}/append"),
        IncrFloat => Yes("POST /v1/kv/{key}/incr-float"),
        MultiPut => Yes("POST /v1/kv"),
        Rename => Yes("POST /v1/kv/{key}/rename ?to="),
        Publish => Yes("POST /v1/publish/{channel}"),
        Type => Yes("GET /v1/kv/{key}/type"),
        Flush => Yes("DELETE /v1/keyspace"),
        RandomKey => Yes("GET /v1/keyspace/random"),
        HashIncr => Yes("POST /v1/hash/{key}/{field}/incr"),
        HashSetIfAbsent => Yes("PUT /v1/hash/{key}/{field} If-None-Match: *"),
        HashLen => Yes("GET /v1/hash/{key} ?len=true"),
        ListLen => Yes("GET /v1/list/{key} ?len=true"),
        ListSet => Yes("PUT /v1/list/{key}/{index}"),
        GetRange => Yes("GET /v1/kv/{key}/range"),
        Txn => Yes("POST /v1/txn"),
        Eval => Yes("POST /v1/eval"),
        ListTrim => Yes("POST /v1/list/{key}/trim"),
    }
}
