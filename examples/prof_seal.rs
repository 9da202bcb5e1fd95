use strongroom::*;
fn main() {
    let ring = KeyRing::in_memory();
    let c = ring.client(Principal::service("p").unwrap());
    let k = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let ctx = EncryptionContext::new().with("a", "b");
    let t = std::time::Instant::now();
    for _ in 0..20000 {
        let m = c.seal(k.as_str(), &[1u8; 64], &ctx).unwrap();
        std::hint::black_box(m);
    }
    println!("{:?}/seal", t.elapsed() / 20000);
}
