//! Which gRPC methods reach each model command (the gRPC column of the coverage table).

use nanodb_protocol::CommandName::{self, *};

use crate::frontend::coverage::Reach::{self, Yes};

/// How gRPC reaches `c`: the `nanodb.v1` methods that run it.
pub fn reach(c: CommandName) -> Reach {
    match c {
        Ping => Yes("Admin.Ping"),
        Get => Yes("KV.Get"),
        Put => Yes("KV.Put"),
        GetSet => Yes("KV.GetSet"),
        Delete => Yes("KV.Delete"),
        DeleteIf => Yes("KV.DeleteIf"),
        Exists => Yes("KV.Exists"),
        Incr => Yes("KV.Incr"),
        Expire => Yes("KV.Expire"),
        Ttl => Yes("KV.Ttl"),
        Scan => Yes("KV.Scan"),
        Batch => Yes("KV.Batch"),
        HashSet => Yes("KV.HashSet"),
        HashGet => Yes("KV.HashGet"),
        HashDelete => Yes("KV.HashDelete"),
        HashGetAll => Yes("KV.HashGetAll"),
        ListPush => Yes("KV.ListPush"),
        ListPop => Yes("KV.ListPop"),
        ListRange => Yes("KV.ListRange"),
        KeyCount => Yes("KV.KeyCount"),
        GetDel => Yes("KV.GetDel"),
        GetEx => Yes("KV.GetEx"),
        Append => Yes("KV.Append"),
        IncrFloat => Yes("KV.IncrFloat"),
        MultiPut => Yes("KV.MultiPut"),
        Rename => Yes("KV.Rename"),
        Publish => Yes("KV.Publish"),
        Type => Yes("KV.Type"),
        Flush => Yes("KV.Flush"),
        RandomKey => Yes("KV.RandomKey"),
        HashIncr => Yes("KV.HashIncr"),
        HashSetIfAbsent => Yes("KV.HashSetIfAbsent"),
        HashLen => Yes("KV.HashLen"),
        ListLen => Yes("KV.ListLen"),
        ListSet => Yes("KV.ListSet"),
        ListTrim => Yes("KV.ListTrim"),
        GetRange => Yes("KV.GetRange"),
        Txn => Yes("KV.Txn"),
        Eval => Yes("KV.Eval"),
    }
}
