//! Which RESP commands reach each model command (the RESP column of the coverage table).

use nanodb_protocol::CommandName::{self, *};

use crate::frontend::coverage::Reach::{self, No, Yes};

/// How RESP reaches `c`: the Redis commands that run it.
pub fn reach(c: CommandName) -> Reach {
    match c {
        Ping => Yes("PING"),
        Get => Yes("GET, MGET, STRLEN"),
        Put => Yes("SET, SETNX, SETEX, PSETEX"),
        GetSet => Yes("SET key value GET, GETSET"),
        Delete => Yes("DEL, UNLINK"),
        DeleteIf => No("Redis has no compare-and-delete; TCP, gRPC and REST If-Match have it"),
        Exists => Yes("EXISTS"),
        Incr => Yes("INCR, DECR, INCRBY, DECRBY"),
        Expire => Yes("EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, PERSIST"),
        Ttl => Yes("TTL, PTTL"),
        Scan => Yes("SCAN, KEYS"),
        Batch => No("RESP batches by pipelining"),
        HashSet => Yes("HSET, HMSET"),
        HashGet => Yes("HGET, HMGET, HEXISTS"),
        HashDelete => Yes("HDEL"),
        HashGetAll => Yes("HGETALL, HKEYS, HVALS"),
        ListPush => Yes("LPUSH, RPUSH"),
        ListPop => Yes("LPOP, RPOP"),
        ListRange => Yes("LRANGE, LINDEX"),
        KeyCount => Yes("DBSIZE"),
        GetDel => Yes("GETDEL"),
        GetEx => Yes("GETEX"),
        Append => Yes("APPEND"),
        IncrFloat => Yes("INCRBYFLOAT"),
        MultiPut => Yes("MSET, MSETNX"),
        Rename => Yes("RENAME"),
        Publish => Yes("PUBLISH"),
        Type => Yes("TYPE, SCAN key TYPE type"),
        Flush => Yes("FLUSHDB, FLUSHALL"),
        RandomKey => Yes("RANDOMKEY"),
        HashIncr => Yes("HINCRBY"),
        HashSetIfAbsent => Yes("HSETNX"),
        HashLen => Yes("HLEN"),
        ListLen => Yes("LLEN"),
        ListSet => Yes("LSET"),
        ListTrim => Yes("LTRIM"),
        GetRange => Yes("GETRANGE"),
        Txn => No("MULTI/EXEC/WATCH run the queued commands as one engine group, the mechanism Txn uses"),
        Eval => Yes("EVAL, EVALSHA"),
    }
}
