use tonic::{Request, Response, Status};
use weave_proto::{
    token::{AdminCredential, hash_secret},
    v1::{RotateAdminCredentialRequest, RotateAdminCredentialResponse, admin_service_server::AdminService},
};

use super::Shared;
use crate::identity::{admin_credential_path, new_secret, write_secret_file};
use crate::store::Caller;

pub struct Admin(pub Shared);

#[tonic::async_trait]
impl AdminService for Admin {
    #[tracing::instrument(skip_all)]
    async fn rotate_admin_credential(
        &self,
        request: Request<RotateAdminCredentialRequest>,
    ) -> Result<Response<RotateAdminCredentialResponse>, Status> {
        // The caller is checked inside the turn: of two rotations with one
        // credential, the second finds it rotated away (UNAUTHENTICATED,
        // nothing changed), and no caller is handed a credential that an
        // overlapping rotation has already replaced.
        let _turn = self.0.rotation.lock().await;
        let (caller, caller_hash) = self.0.caller_and_hash(&request).await?;
        if let Caller::Node { name, .. } = caller {
            return Err(Status::permission_denied(format!("node {name} may not do this: it needs the admin role")));
        }
        let secret = new_secret();
        let hash = hash_secret(&secret);
        let credential = AdminCredential { coordinator: self.0.advertise.clone(), pin: self.0.pin, secret };
        // The file first: a start makes the file's credential the only valid
        // one, so a rotation whose file write failed would be undone by the
        // next restart (the leaked credential back in force). If the database
        // step fails after it, the old credential still works now and the
        // next start completes the rotation.
        let path = admin_credential_path(&self.0.data_dir);
        let before = std::fs::read_to_string(&path).ok();
        write_secret_file(&path, &format!("{credential}\n")).map_err(|e| {
            tracing::error!(error = %e, "cannot write the new admin credential; nothing rotated");
            Status::internal(format!("cannot write {}: {e}; the admin credential was not rotated", path.display()))
        })?;
        // Only while the caller's credential is still the valid one: another
        // coordinator of the database may have rotated it away meanwhile
        // (this one's lock does not reach it). Then the file is put back.
        // On any failure the file is put back: a secret the database never
        // took, left there, was made the one valid credential by the next
        // start, locking out the one rotated to since (found by a review,
        // 2026-12-05). A crash in between still leaves it for the start to
        // complete, as before.
        let rotated = self.0.store.rotate_admin_credential(&caller_hash, &hash).await;
        if !matches!(rotated, Ok(true)) {
            let put_back = match &before {
                Some(before) => write_secret_file(&path, before),
                None => std::fs::remove_file(&path)
                    .map_err(|source| crate::identity::IdentityError::Io { path: path.clone(), source }),
            };
            if let Err(e) = put_back {
                tracing::error!(error = %e, "cannot put the admin credential file back");
            }
        }
        if !rotated? {
            return Err(Status::unauthenticated(
                "this admin credential was rotated away meanwhile (through another coordinator?): nothing rotated; \
                 use the current one",
            ));
        }
        // Open watches of the old credential end now.
        self.0.credentials_epoch.send_modify(|e| *e += 1);
        tracing::info!("admin credential rotated; the previous one no longer works");
        Ok(Response::new(RotateAdminCredentialResponse { credential: credential.to_string() }))
    }
}
