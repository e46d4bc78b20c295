use tonic::{Request, Response, Status};
use weave_proto::{
    token::{AdminCredential, hash_secret},
    v1::{RotateAdminCredentialRequest, RotateAdminCredentialResponse, admin_service_server::AdminService},
};

use super::Shared;
use crate::identity::{admin_credential_path, new_secret, write_secret_file};

pub struct Admin(pub Shared);

#[tonic::async_trait]
impl AdminService for Admin {
    #[tracing::instrument(skip_all)]
    async fn rotate_admin_credential(
        &self,
        request: Request<RotateAdminCredentialRequest>,
    ) -> Result<Response<RotateAdminCredentialResponse>, Status> {
        self.0.admin(&request).await?;
        let secret = new_secret();
        self.0.store.replace_admin_credential(&hash_secret(&secret)).await?;
        let credential = AdminCredential { coordinator: self.0.advertise.clone(), pin: self.0.pin, secret };
        // The database already holds the new one: failing here would lose it
        // for the caller too, so the caller still gets it and the file is
        // reported. (A restart with the old file would bring the old one back.)
        let path = admin_credential_path(&self.0.data_dir);
        if let Err(e) = write_secret_file(&path, &format!("{credential}\n")) {
            tracing::error!(error = %e, "rotated the admin credential but cannot write it to the data dir");
        }
        // Open watches of the old credential end now.
        self.0.credentials_epoch.send_modify(|e| *e += 1);
        tracing::info!("admin credential rotated; the previous one no longer works");
        Ok(Response::new(RotateAdminCredentialResponse { credential: credential.to_string() }))
    }
}
