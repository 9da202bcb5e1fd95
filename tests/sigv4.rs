//! `interop::sigv4` against AWS's published Signature Version 4 test suite
//! (tests/vectors/sigv4, from awslabs/aws-c-auth, Apache-2.0): for each
//! case, the canonical request, the string to sign, the signature and the
//! `Authorization` header must be exactly AWS's, and the verifier must
//! accept the signed request and refuse it altered.
#![cfg(feature = "aws-kms")]

use std::path::Path;
use strongroom::interop::sigv4::{
    self, Authorization, Credentials, Scope, canonical_request, sha256_hex, string_to_sign,
};

const CASES: &[&str] = &[
    "get-vanilla",
    "get-vanilla-query-order-key-case",
    "get-vanilla-with-session-token",
    "post-vanilla",
    "post-header-key-sort",
    "post-x-www-form-urlencoded",
];

struct Case {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    creds: Credentials,
    date_time: String,
    region: String,
    service: String,
    dir: std::path::PathBuf,
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
}

fn load(name: &str) -> Case {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/sigv4")
        .join(name);
    let ctx: serde_json::Value = serde_json::from_str(&read(&dir, "context.json")).unwrap();
    let c = &ctx["credentials"];
    let mut creds = Credentials::new(
        c["access_key_id"].as_str().unwrap(),
        c["secret_access_key"].as_str().unwrap(),
    );
    if let Some(t) = c["token"].as_str() {
        creds = creds.with_session_token(t);
    }
    let request = read(&dir, "request.txt");
    let (head, body) = request.split_once("\n\n").unwrap_or((&request, ""));
    let mut lines = head.lines();
    let mut first = lines.next().unwrap().split(' ');
    let method = first.next().unwrap().to_owned();
    let target = first.next().unwrap();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_owned(), v.to_owned())
        })
        .collect();
    if ctx["sign_body"].as_bool() == Some(true) {
        headers.push(("x-amz-content-sha256".into(), sha256_hex(body.as_bytes())));
    }
    Case {
        method,
        path: path.into(),
        query: query.into(),
        headers,
        body: body.as_bytes().to_vec(),
        creds,
        date_time: ctx["timestamp"].as_str().unwrap().replace(['-', ':'], ""),
        region: ctx["region"].as_str().unwrap().into(),
        service: ctx["service"].as_str().unwrap().into(),
        dir,
    }
}

#[test]
fn aws_test_suite_vectors() {
    for name in CASES {
        let c = load(name);
        let scope = Scope {
            date_time: &c.date_time,
            region: &c.region,
            service: &c.service,
        };
        let headers: Vec<(&str, &str)> = c
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let added = sigv4::sign(
            &c.method, &c.path, &c.query, &headers, &c.body, &c.creds, &scope,
        )
        .unwrap();

        // The Authorization header is exactly the one AWS's signed request carries.
        let signed_request = read(&c.dir, "header-signed-request.txt");
        let expected_auth = signed_request
            .lines()
            .find_map(|l| l.strip_prefix("Authorization:"))
            .unwrap();
        assert_eq!(
            added.last().unwrap(),
            &("authorization".to_string(), expected_auth.to_string()),
            "{name}"
        );

        // Intermediate values, recomputed from the parsed header.
        let auth = Authorization::parse(expected_auth).unwrap();
        let mut all = headers.clone();
        for (n, v) in &added[..added.len() - 1] {
            all.push((n, v));
        }
        let signed: Vec<&str> = auth.signed_headers.iter().map(String::as_str).collect();
        let creq = canonical_request(
            &c.method,
            &c.path,
            &c.query,
            &all,
            &signed,
            &sha256_hex(&c.body),
        )
        .unwrap();
        assert_eq!(
            creq,
            read(&c.dir, "header-canonical-request.txt"),
            "{name}: canonical request"
        );
        let sts = string_to_sign(&creq, &scope).unwrap();
        assert_eq!(
            sts,
            read(&c.dir, "header-string-to-sign.txt"),
            "{name}: string to sign"
        );
        assert_eq!(
            sigv4::signature(&c.creds, &scope, &sts).unwrap(),
            read(&c.dir, "header-signature.txt").trim(),
            "{name}: signature"
        );

        // The verifier accepts the request and refuses it altered.
        assert!(
            auth.verify(
                &c.method,
                &c.path,
                &c.query,
                &all,
                &c.body,
                &c.date_time,
                &c.creds
            )
            .unwrap(),
            "{name}"
        );
        let mut tampered = c.body.clone();
        tampered.push(b'x');
        assert!(
            !auth
                .verify(
                    &c.method,
                    &c.path,
                    &c.query,
                    &all,
                    &tampered,
                    &c.date_time,
                    &c.creds
                )
                .unwrap()
        );
        let other = Credentials::new(c.creds.access_key_id(), "another secret");
        assert!(
            !auth
                .verify(
                    &c.method,
                    &c.path,
                    &c.query,
                    &all,
                    &c.body,
                    &c.date_time,
                    &other
                )
                .unwrap()
        );
        assert!(
            !auth
                .verify(
                    &c.method,
                    "/other",
                    &c.query,
                    &all,
                    &c.body,
                    &c.date_time,
                    &c.creds
                )
                .unwrap()
        );
    }
}

#[test]
fn amz_date_of_unix_time() {
    // The suite's timestamp, 2015-08-30T12:36:00Z.
    assert_eq!(sigv4::amz_date(1_440_938_160), "20150830T123600Z");
    assert_eq!(sigv4::amz_date(0), "19700101T000000Z");
    // A leap day and the end of a leap year.
    assert_eq!(sigv4::amz_date(951_782_400), "20000229T000000Z");
    assert_eq!(sigv4::amz_date(1_735_689_599), "20241231T235959Z");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let creds = Credentials::new("AKID", "secret");
    let scope = Scope {
        date_time: "2015-08-30",
        region: "us-east-1",
        service: "kms",
    };
    assert!(sigv4::sign("GET", "/", "", &[("host", "h")], b"", &creds, &scope).is_err());
    let scope = Scope {
        date_time: "20150830T123600Z",
        region: "us-east-1",
        service: "kms",
    };
    assert!(
        sigv4::sign("GET", "/", "", &[], b"", &creds, &scope).is_err(),
        "host is required"
    );
    assert!(Authorization::parse("Basic dXNlcjpwYXNz").is_none());
    assert!(
        Authorization::parse("AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=00")
            .is_none()
    );
    // The secret never shows in Debug.
    assert!(!format!("{creds:?}").contains("secret\""));
    assert!(format!("{:?}", creds.clone().with_session_token("tok-123")).contains("<redacted>"));
    assert!(!format!("{:?}", creds.with_session_token("tok-123")).contains("tok-123"));
}
