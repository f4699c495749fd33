//! A valid component that is not a hookhost plugin: it exports a different function.
//! `hookhost plugin check` must refuse it and say what is missing.

wit_bindgen::generate!({
    inline: r#"
        package test:wrong;
        world wrong {
            export run: func() -> string;
        }
    "#,
});

struct Wrong;

impl Guest for Wrong {
    fn run() -> String {
        "not a plugin".into()
    }
}

export!(Wrong);
