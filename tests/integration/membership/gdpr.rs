//! GDPR export and erasure.

use super::{MEMBER, PROJECT_ADMIN, ROOT, World, ids};
use crate::support::db;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_data_is_exported_and_erased_with_the_audit_pseudonymised() {
    for url in db::all().await {
        let w = World::on(&url).await;
        // mem reports an issue and comments; pad assigns another issue to mem.
        let own = w
            .call(
                MEMBER,
                "POST",
                "/api/v1/issues",
                Some(json!({"project_id": 1, "title": "mine"})),
            )
            .await
            .json()["id"]
            .as_i64()
            .unwrap();
        w.call(
            MEMBER,
            "POST",
            &format!("/api/v1/issues/{own}/comments"),
            Some(json!({"body": "my note"})),
        )
        .await;
        let assigned = w
            .call(
                PROJECT_ADMIN,
                "PATCH",
                &format!("/api/v1/issues/{}", w.issue),
                Some(json!({"assignee": MEMBER})),
            )
            .await;
        assert_eq!(assigned.status, 200);
        let export = w
            .call(ROOT, "GET", "/api/v1/admin/users/mem/export", None)
            .await;
        assert_eq!(export.status, 200, "{}", export.text());
        let data = export.json();
        let issue_ids: Vec<i64> = data["issues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_i64().unwrap())
            .collect();
        assert_eq!(issue_ids, vec![w.issue, own]);
        assert_eq!(data["comments"][0]["body"], "my note");
        assert_eq!(data["memberships"][0]["role"], "member");
        let by: Vec<&str> = data["audit_by"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["entity"].as_str().unwrap())
            .collect();
        assert_eq!(by, ["issue", "comment"]);
        let about = data["audit_about"].as_array().unwrap();
        assert!(
            about.iter().any(|e| e["entity"] == "membership"),
            "{about:?}"
        );
        assert!(
            about
                .iter()
                .any(|e| e["changes"]["assignee"]["after"] == MEMBER),
            "{about:?}"
        );

        let erased = w
            .call(ROOT, "POST", "/api/v1/admin/users/mem/erase", None)
            .await;
        assert_eq!(erased.status, 200, "{}", erased.text());
        let erasure = erased.json();
        let pseudonym = erasure["pseudonym"].as_str().unwrap().to_owned();
        assert!(
            pseudonym.starts_with("erased:") && pseudonym.len() == 23,
            "{pseudonym}"
        );
        assert_eq!(erasure["memberships"], json!([1]));
        // Nothing names the user any more; the pseudonym stands where they stood.
        let after = w
            .call(ROOT, "GET", "/api/v1/admin/users/mem/export", None)
            .await
            .json();
        for list in [
            "issues",
            "comments",
            "memberships",
            "audit_by",
            "audit_about",
        ] {
            assert_eq!(after[list], json!([]), "{list}");
        }
        let issue = w
            .call(ROOT, "GET", &format!("/api/v1/issues/{own}"), None)
            .await
            .json();
        assert_eq!(issue["reporter"], pseudonym);
        let first = w
            .call(ROOT, "GET", &format!("/api/v1/issues/{}", w.issue), None)
            .await
            .json();
        assert_eq!(first["assignee"], pseudonym);
        let audit = w.call(ROOT, "GET", "/api/v1/audit/export", None).await;
        assert!(!audit.text().contains("\"mem\""), "{}", audit.text());
        let by_pseudonym = w
            .call(
                ROOT,
                "GET",
                &format!("/api/v1/audit?actor={pseudonym}"),
                None,
            )
            .await;
        assert_eq!(ids(&by_pseudonym).len(), 2);
        // The erasure is itself audited, by who did it, without the erased id.
        let entry = w
            .call(ROOT, "GET", "/api/v1/audit?entity=user&action=erase", None)
            .await
            .json();
        assert_eq!(entry["items"][0]["actor"], ROOT);
        assert_eq!(
            entry["items"][0]["changes"]["pseudonym"]["after"],
            pseudonym
        );
        // The user lost their project; the pseudonym is stable; the log is still
        // append-only outside an erasure.
        assert_eq!(
            w.call(MEMBER, "GET", &format!("/api/v1/issues/{own}"), None)
                .await
                .status,
            404
        );
        let again = w
            .call(ROOT, "POST", "/api/v1/admin/users/mem/erase", None)
            .await
            .json();
        assert_eq!(again["pseudonym"], pseudonym);
        let tamper = sqlx::query("UPDATE audit_log SET actor = 'x'")
            .execute(w.server.server().store().pool())
            .await;
        assert!(tamper.is_err(), "the audit log stays append-only");
        // Only fields naming a person change: erasing a user called "open" leaves the
        // statuses recorded as "open" alone.
        let statuses = |text: String| text.matches(r#""after":"open""#).count();
        let before = statuses(
            w.call(ROOT, "GET", "/api/v1/audit/export", None)
                .await
                .text(),
        );
        assert!(before > 0);
        w.call(ROOT, "POST", "/api/v1/admin/users/open/erase", None)
            .await;
        let after = statuses(
            w.call(ROOT, "GET", "/api/v1/audit/export", None)
                .await
                .text(),
        );
        assert_eq!(after, before);
        w.server.stop().await;
    }
}
