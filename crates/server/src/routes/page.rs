//! The two HTML pages (dashboard, docs) with the headers a browser needs to keep them
//! safe: no framing (clickjacking), no referrer, no MIME sniffing, and a Content Security
//! Policy that lets only scripts from this server run: files it serves (the dashboard's
//! modules) and the page's own inline scripts (the docs page's), allowed by their SHA-256
//! hash computed from the page itself, so no `'unsafe-inline'` scripts and no hash to
//! keep in step by hand when the page changes.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

/// `html` as a response with the security headers.
pub fn secure_page(html: &'static str) -> Response {
    let mut response = Html(html).into_response();
    let headers = response.headers_mut();
    let policy = HeaderValue::from_str(&content_security_policy(html))
        .expect("a policy of ASCII tokens and base64");
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Everything from this origin only; scripts from this origin and the page's inline ones
/// (by hash);
/// inline style attributes allowed (the pages use a few; styles run no code); images also
/// from `data:`/`blob:` URLs (generated images shown in place).
pub fn content_security_policy(html: &str) -> String {
    let scripts: Vec<String> = inline_scripts(html)
        .map(|script| {
            let digest = Sha256::digest(script.as_bytes());
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        })
        .collect();
    format!(
        "default-src 'self'; script-src 'self'{}; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        scripts.iter().map(|s| format!(" {s}")).collect::<String>()
    )
}

/// The text of each `<script>…</script>` without attributes (what the hash covers).
fn inline_scripts(html: &str) -> impl Iterator<Item = &str> {
    html.split("<script>")
        .skip(1)
        .filter_map(|rest| rest.split_once("</script>").map(|(script, _)| script))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_page_scripts_by_hash() {
        let page = "<p>x</p><script>run();</script><script>more();</script>";
        let policy = content_security_policy(page);
        // sha256("run();") in base64, computed independently.
        let expected = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"run();"));
        assert!(policy.contains(&format!("'sha256-{expected}'")), "{policy}");
        assert_eq!(policy.matches("'sha256-").count(), 2);
        let script_src = policy
            .split(';')
            .find(|d| d.trim().starts_with("script-src"))
            .unwrap();
        assert!(!script_src.contains("unsafe"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"));
        assert!(content_security_policy("<p>no script</p>").contains("script-src 'self';"));
    }

    #[test]
    fn both_pages_get_their_scripts_and_the_headers() {
        for (page, inline) in [
            (include_str!("../../assets/dashboard/index.html"), 0),
            (include_str!("../../assets/docs.html"), 1),
        ] {
            assert_eq!(inline_scripts(page).count(), inline);
            let response = secure_page(page);
            let headers = response.headers();
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(headers["x-content-type-options"], "nosniff");
            let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert_eq!(policy.matches("'sha256-").count(), inline, "{policy}");
            assert!(policy.contains("script-src 'self'"), "{policy}");
        }
    }
}
