//! The candle encoder against an independent reference (transformers' Python BertTokenizer and
//! a NumPy forward pass, `microvote/reference/reference.py`): identical token ids, cosine
//! ≥ 0.9999 for every sentence. Needs the encoder files (`cargo xtask microvote-model`).

use kakeya_microvote::encoder::{default_model_dir, dot, Encoder};

#[derive(serde::Deserialize)]
struct Reference {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

#[test]
fn matches_the_reference_embeddings() {
    let enc = Encoder::load(&default_model_dir()).unwrap();
    let refs: Vec<Reference> = serde_json::from_str(include_str!("reference.json")).unwrap();
    assert!(refs.len() >= 4);
    for r in refs {
        let (ids, _) = enc.token_ids(&r.text).unwrap();
        assert_eq!(ids, r.ids, "token ids of {:?}", r.text);
        let e = enc.encode(&r.text).unwrap();
        let n = dot(&r.embedding, &r.embedding).sqrt();
        let cos = dot(&e.pooled, &r.embedding) / n;
        assert!(cos >= 0.9999, "cosine {cos} for {:?}", r.text);
    }
}
