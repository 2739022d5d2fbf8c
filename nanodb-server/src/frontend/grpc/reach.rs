//! Which gRPC methods reach each model command (the gRPC column of the coverage table).

use nanodb_protocol::CommandName::{self, *};

use crate::frontend::coverage::Reach::{self, No, Yes};

/// How gRPC reaches `c`: the `nanodb.v1` methods that run it.
pub fn reach(c: CommandName) -> Reach {
    match c {
        Ping => Yes("Admin.Ping"),
        Get => Yes("KV.Get"),
        Put => Yes("KV.Put"),
        Delete => Yes("KV.Delete"),
        Incr => Yes("KV.Incr"),
        Expire => Yes("KV.Expire"),
        Scan => Yes("KV.Scan"),
        Batch => Yes("KV.Batch"),
        HashSet => Yes("KV.HashSet"),
        HashGet => Yes("KV.HashGet"),
        HashDelete => Yes("KV.HashDelete"),
        HashGetAll => Yes("KV.HashGetAll"),
        ListPush => Yes("KV.ListPush"),
        ListPop => Yes("KV.ListPop"),
        ListRange => Yes("KV.ListRange"),
        Publish => Yes("KV.Publish"),
        GetSet | DeleteIf | Exists | Ttl | KeyCount | GetDel | GetEx | Append | IncrFloat | MultiPut
        | Rename | Type | Flush | RandomKey | HashIncr | HashSetIfAbsent | HashLen | ListLen | ListSet
        | ListTrim => No("not mapped yet"),
    }
}
