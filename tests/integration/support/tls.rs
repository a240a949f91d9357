//! A private certificate authority made by the test with `openssl`, and a server
//! certificate it signed for 127.0.0.1 and localhost, in a temporary directory. The
//! certificate serves as a client certificate too: Redis Cluster nodes present theirs
//! to each other on the TLS cluster bus.

use std::path::{Path, PathBuf};
use std::process::Command;

/// CA and server certificate files (PEM).
pub struct TestCa {
    /// The directory holding them (removed on drop).
    pub dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl TestCa {
    /// A new CA and a server certificate signed by it.
    pub fn new(name: &str) -> TestCa {
        let dir = std::env::temp_dir().join(format!(
            "roomcast-tls-{name}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=roomcast test CA",
            ],
        );
        openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName = IP:127.0.0.1, DNS:localhost\n\
             basicConstraints = CA:FALSE\n\
             keyUsage = digitalSignature, keyEncipherment\n\
             extendedKeyUsage = serverAuth, clientAuth\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        TestCa { dir }
    }

    /// The CA certificate clients trust.
    pub fn ca_cert(&self) -> String {
        self.path("ca.crt")
    }

    /// The server's certificate.
    pub fn server_cert(&self) -> String {
        self.path("server.crt")
    }

    /// The server's private key.
    pub fn server_key(&self) -> String {
        self.path("server.key")
    }

    /// Options of a redis-server (or sentinel) that also listens with TLS on `port`,
    /// presenting the server certificate and not asking clients for one.
    pub fn redis_options(&self, port: u16) -> Vec<String> {
        [
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            self.server_cert(),
            "--tls-key-file".to_owned(),
            self.server_key(),
            "--tls-ca-cert-file".to_owned(),
            self.ca_cert(),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ]
        .into()
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
