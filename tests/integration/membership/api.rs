//! Every route of the issue tracker for each kind of caller.

use super::{MEMBER, OUTSIDER, PROJECT_ADMIN, ROOT, VIEWER, World, ids};
use crate::support::db;
use crate::support::http::json;
use crate::support::tokens::{bearer, user_token};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tracker_route_follows_project_membership() {
    for url in db::all().await {
        let w = World::on(&url).await;
        let (issue, comment) = (w.issue, w.comment);
        let one = format!("/api/v1/issues/{issue}");
        let comments = format!("{one}/comments");
        let a_comment = format!("{comments}/{comment}");
        let none = "/api/v1/issues/999999";
        // Reads: every member; a non-member sees what a missing resource looks like.
        w.expect("GET", &one, none, None, [200, 200, 200, 404, 200])
            .await;
        w.expect(
            "GET",
            &comments,
            &format!("{none}/comments"),
            None,
            [200, 200, 200, 404, 200],
        )
        .await;
        w.expect(
            "GET",
            &a_comment,
            &format!("{comments}/999999"),
            None,
            [200, 200, 200, 404, 200],
        )
        .await;
        w.expect(
            "GET",
            "/api/v1/projects/1/members",
            "/api/v1/projects/99/members",
            None,
            [200, 200, 200, 404, 200],
        )
        .await;
        // Writes: members and admins; viewers 403.
        let patch = Some(json!({"status": "in_progress"}));
        w.expect("PATCH", &one, none, patch, [403, 200, 200, 404, 200])
            .await;
        let body = Some(json!({"body": "more"}));
        w.expect(
            "POST",
            &comments,
            &format!("{none}/comments"),
            body,
            [403, 201, 201, 404, 201],
        )
        .await;
        let edit = Some(json!({"body": "edited"}));
        w.expect(
            "PATCH",
            &a_comment,
            &format!("{comments}/999999"),
            edit,
            [403, 200, 200, 404, 200],
        )
        .await;
        // Creating an issue in a project one is not a member of looks like creating one
        // in a project nobody is a member of.
        let into = |project: i64| Some(json!({"project_id": project, "title": "new"}));
        for (who, status) in [
            (VIEWER, 403),
            (MEMBER, 201),
            (PROJECT_ADMIN, 201),
            (OUTSIDER, 404),
            (ROOT, 201),
        ] {
            let reply = w.call(who, "POST", "/api/v1/issues", into(1)).await;
            assert_eq!(reply.status, status, "{who}: {}", reply.text());
        }
        let hidden = w.call(OUTSIDER, "POST", "/api/v1/issues", into(1)).await;
        let nobodys = w.call(OUTSIDER, "POST", "/api/v1/issues", into(99)).await;
        assert_eq!(
            (hidden.status, hidden.json()),
            (nobodys.status, nobodys.json())
        );
        // Deletes need a fresh target per caller allowed to delete.
        for (who, status) in [
            (VIEWER, 403),
            (OUTSIDER, 404),
            (MEMBER, 204),
            (PROJECT_ADMIN, 204),
            (ROOT, 204),
        ] {
            let target = w
                .call(
                    MEMBER,
                    "POST",
                    "/api/v1/issues",
                    Some(json!({"project_id": 1, "title": "doomed"})),
                )
                .await
                .json()["id"]
                .as_i64()
                .unwrap();
            let note = w
                .call(
                    MEMBER,
                    "POST",
                    &format!("/api/v1/issues/{target}/comments"),
                    Some(json!({"body": "x"})),
                )
                .await
                .json()["id"]
                .as_i64()
                .unwrap();
            let note_path = format!("/api/v1/issues/{target}/comments/{note}");
            assert_eq!(
                w.call(who, "DELETE", &note_path, None).await.status,
                status,
                "{who} deletes a comment"
            );
            assert_eq!(
                w.call(who, "DELETE", &format!("/api/v1/issues/{target}"), None)
                    .await
                    .status,
                status,
                "{who} deletes an issue"
            );
        }
        // Managing members: project admins and global administrators.
        let member_path = "/api/v1/projects/1/members/newcomer";
        let role = Some(json!({"role": "viewer"}));
        w.expect(
            "PUT",
            member_path,
            "/api/v1/projects/99/members/newcomer",
            role.clone(),
            [403, 403, 201, 404, 200],
        )
        .await;
        w.expect(
            "DELETE",
            member_path,
            "/api/v1/projects/99/members/newcomer",
            None,
            [403, 403, 204, 404, 404],
        )
        .await;
        assert_eq!(
            w.call(ROOT, "PUT", "/api/v1/projects/3/members/someone", role)
                .await
                .status,
            201
        );
        // Listings show only the caller's projects.
        let all = w.call(ROOT, "GET", "/api/v1/issues", None).await;
        assert!(ids(&all).contains(&w.other_issue) && ids(&all).contains(&issue));
        let viewer = w.call(VIEWER, "GET", "/api/v1/issues", None).await;
        assert!(ids(&viewer).contains(&issue) && !ids(&viewer).contains(&w.other_issue));
        assert_eq!(
            ids(&w.call(OUTSIDER, "GET", "/api/v1/issues", None).await),
            vec![w.other_issue]
        );
        assert_eq!(
            ids(&w
                .call(OUTSIDER, "GET", "/api/v1/issues?project_id=1", None)
                .await),
            Vec::<i64>::new()
        );
        // The audit log: everything for global administrators, their projects' entries
        // for project admins, nothing for others.
        let everything = w
            .call(ROOT, "GET", "/api/v1/audit?limit=200", None)
            .await
            .json();
        let projects: Vec<Value> = everything["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["project_id"].clone())
            .collect();
        assert!(
            projects.contains(&json!(1)) && projects.contains(&json!(2)),
            "{projects:?}"
        );
        let admin_view = w
            .call(PROJECT_ADMIN, "GET", "/api/v1/audit?limit=200", None)
            .await
            .json();
        let mine = admin_view["items"].as_array().unwrap();
        assert!(!mine.is_empty());
        assert!(mine.iter().all(|e| e["project_id"] == 1), "{mine:?}");
        let export = w
            .call(PROJECT_ADMIN, "GET", "/api/v1/audit/export", None)
            .await
            .json();
        assert_eq!(export.as_array().unwrap().len(), mine.len());
        for who in [VIEWER, MEMBER, OUTSIDER] {
            assert_eq!(
                ids(&w.call(who, "GET", "/api/v1/audit", None).await),
                Vec::<i64>::new(),
                "{who}"
            );
            assert_eq!(
                w.call(who, "GET", "/api/v1/audit/export", None)
                    .await
                    .json(),
                json!([]),
                "{who}"
            );
        }
        // GDPR routes: global administrators only.
        for who in [VIEWER, MEMBER, PROJECT_ADMIN, OUTSIDER] {
            assert_eq!(
                w.call(who, "GET", "/api/v1/admin/users/mem/export", None)
                    .await
                    .status,
                403
            );
            assert_eq!(
                w.call(who, "POST", "/api/v1/admin/users/mem/erase", None)
                    .await
                    .status,
                403
            );
        }
        w.server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_checks_keep_validation_idempotency_and_etags() {
    for url in db::all().await {
        let w = World::on(&url).await;
        let create = json!({"project_id": 1, "title": "keyed"});
        let token = bearer(&user_token(MEMBER));
        let headers = [
            ("authorization", token.as_str()),
            ("idempotency-key", "m-1"),
        ];
        let first = json(&w.addr, "POST", "/api/v1/issues", &headers, &create).await;
        let again = json(&w.addr, "POST", "/api/v1/issues", &headers, &create).await;
        assert_eq!((first.status, again.status), (201, 201));
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(first.json(), again.json());
        let invalid = w
            .call(
                MEMBER,
                "POST",
                "/api/v1/issues",
                Some(json!({"project_id": 1, "title": ""})),
            )
            .await;
        assert_eq!(invalid.status, 422);
        let path = format!("/api/v1/issues/{}", w.issue);
        let stale = json(
            &w.addr,
            "PATCH",
            &path,
            &[("authorization", token.as_str()), ("if-match", "\"7\"")],
            &json!({"title": "x"}),
        )
        .await;
        assert_eq!(stale.status, 412);
        w.server.stop().await;
    }
}
