//! Property-driven fuzzing of every browser message parser: arbitrary text, arbitrary JSON (deep,
//! huge numbers, unicode), spelled-out NaN/Infinity, wrong types and path-like model names. Nothing
//! may panic; whatever is accepted must be within the protocol's limits.

use ipc_proto::inference::SessionCommand;
use ipc_proto::training::limits;
use metaserver::model_catalog::ModelLookup;
use metaserver::validate::{parse_inference, parse_training, InferenceRequest, TrainingRequest};
use proptest::prelude::*;
use serde_json::{json, Value};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".*".prop_map(Value::String),
        prop::sample::select(vec![
            "../../etc/passwd",
            "/etc/passwd",
            "a\u{0}.onnx",
            "..\\..\\x.onnx",
            "models/x.onnx",
            "%2e%2e%2fetc",
            "default.onnx",
            "garbage.onnx",
            "other.onnx",
            "ünïcødé.onnx",
            "CON",
            "x.onnx/",
            ".onnx",
            "a.onnx\n"
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const COMMANDS: [&str; 17] = [
    "probe",
    "take_control",
    "play",
    "pause",
    "step",
    "reset",
    "set_speed",
    "load_model",
    "status",
    "start_training",
    "resume",
    "stop",
    "PLAY",
    "",
    "play ",
    "load_model\u{0}",
    "rm -rf",
];

fn arb_message() -> impl Strategy<Value = String> {
    prop_oneof![
        // Unstructured text.
        ".*",
        prop::collection::vec(any::<u8>(), 0..256).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        // Near-valid messages with hostile fields.
        (prop::sample::select(COMMANDS.to_vec()), arb_json(), arb_json(), prop::option::of(arb_json())).prop_map(|(c, a, b, t)| {
            let mut m = json!({"command": c, "speed": a, "model": b.clone(), "num_episodes": b, "batch_size": a.clone(),
                               "step_delay": a, "model_name": "x", "meters": {"energy": a, "stress": b},
                               "position": {"x": a, "y": b}, "pacing": b, "eval_every": a,
                               "stop_when_competent": b});
            if let Some(t) = t { m["type"] = t; }
            m.to_string()
        }),
        // Numbers JSON cannot hold, spelled out.
        (prop::sample::select(vec!["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-999", "0x10", "+1", "01", "1."]),
         prop::sample::select(COMMANDS.to_vec()))
            .prop_map(|(n, c)| format!(r#"{{"command":"{c}","speed":{n},"num_episodes":{n}}}"#)),
        // Deep nesting.
        (1usize..20_000).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
        (1usize..5_000).prop_map(|d| format!(r#"{{"command":"play","x":{}1{}}}"#, r#"{"a":"#.repeat(d), "}".repeat(d))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn inference_parser_never_panics_and_accepts_only_valid(text in arb_message()) {
        let lookup = |n: &str| match n {
            "default.onnx" => ModelLookup::Offered,
            "garbage.onnx" => ModelLookup::Refused("unusable".into()),
            _ => ModelLookup::Unknown,
        };
        match parse_inference(&text, lookup) {
            Ok(InferenceRequest::Command(SessionCommand::SetSpeed { speed })) => prop_assert!((0.1..=10.0).contains(&speed)),
            Ok(InferenceRequest::Command(SessionCommand::LoadModel { model })) => {
                prop_assert!(hamlet_onnx::catalog::is_plain_name(&model) && model != "garbage.onnx")
            }
            Ok(InferenceRequest::Probe(p)) => {
                for (m, v) in p.meters {
                    let (lo, hi) = hamlet_env::wire::wire_range(m);
                    prop_assert!(v.is_finite() && (lo..=hi).contains(&v));
                }
                if let Some(at) = p.position {
                    prop_assert!((0..8).contains(&at.x) && (0..8).contains(&at.y));
                }
            }
            Ok(_) | Err(_) => {}
        }
    }

    #[test]
    fn training_parser_never_panics_and_accepts_only_valid(text in arb_message()) {
        if let Ok((TrainingRequest::Start(c), _)) = parse_training(&text) {
            prop_assert!(c.validate().is_ok(), "{:?}", c);
            prop_assert!((limits::NUM_EPISODES.0..=limits::NUM_EPISODES.1).contains(&c.num_episodes));
            prop_assert!((limits::BATCH_SIZE.0..=limits::BATCH_SIZE.1).contains(&c.batch_size));
            prop_assert!(c.step_delay.is_finite() && (0.0..=5.0).contains(&c.step_delay));
            if let Some(n) = &c.model_name {
                let name = format!("{n}.onnx");
                prop_assert!(hamlet_onnx::catalog::is_plain_name(&name), "{}", name);
            }
        }
    }
}
