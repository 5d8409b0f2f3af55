//! Arbitrary text through the YAML reader; every document it reads, written
//! back with `yaml::to_string`, reads back as the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prom_mtls_webhook::yaml;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(documents) = yaml::parse_documents(text) else {
        return;
    };
    for value in documents {
        let written = yaml::to_string(&value);
        match yaml::parse_documents(&written) {
            Ok(read) => assert_eq!(
                read,
                vec![value.clone()],
                "round trip changed the value\nwritten: {written:?}"
            ),
            Err(error) => panic!(
                "written YAML does not read back: {error}\nvalue: {value}\nwritten: {written:?}"
            ),
        }
    }
});
