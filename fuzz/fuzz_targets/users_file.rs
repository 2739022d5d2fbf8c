//! Arbitrary text as a users file (`--users-file`, ACL LOAD). Properties: no panic; an error names
//! a line that exists; every parsed user renders to rules that parse back to the same user.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanodb_server::auth::file;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match file::parse(text) {
        Ok(users) => {
            let again = file::parse(&file::render(&users)).expect("a rendered file parses");
            assert_eq!(again, users);
        }
        Err((line, _)) => assert!(line >= 1 && line <= text.lines().count().max(1)),
    }
});
