use tonic::{Request, Response, Status};
use weave_proto::{
    token::{JoinToken, hash_secret},
    v1::{
        CreateTokenRequest, CreateTokenResponse, ListTokensRequest, ListTokensResponse, RevokeTokenRequest, Token,
        token_service_server::TokenService,
    },
};

use super::Shared;
use crate::{
    identity::{new_id, new_secret},
    store::NewToken,
};

pub struct Tokens(pub Shared);

/// A token's description is a note for people (`weavectl token ls`).
pub const MAX_DESCRIPTION_LEN: usize = 256;
/// The longest lifetime a token may be given (ten years); past it, `never`.
const MAX_TTL_SECONDS: u64 = 3650 * 86_400;
/// The shortest `--forget-after-floor`: an agent's restart takes a few
/// seconds, and less would forget nodes in passing.
pub(crate) const MIN_FORGET_AFTER: u64 = 10;

/// Why a token lifetime of `ttl` seconds is refused, if it is: checked for a
/// request's `ttl_seconds` and for `--token-ttl`/`--first-token-ttl` at start.
pub(crate) fn ttl_too_long(ttl: u64) -> Option<String> {
    (ttl > MAX_TTL_SECONDS).then(|| {
        // Rounded up: a day and an hour past the limit must not read as the limit.
        format!(
            "a lifetime of {} days: at most {} (never, for a token that does not expire)",
            ttl.div_ceil(86_400),
            MAX_TTL_SECONDS / 86_400
        )
    })
}

/// Unicode's format characters (category Cf) that text shows as nothing or
/// as a change of direction: soft hyphen, Arabic letter mark, Mongolian vowel
/// separator, zero-width and direction marks, bidi embeddings, overrides and
/// isolates, word joiner and invisible operators, the byte-order mark, the
/// interlinear annotation marks and the tags block.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{61c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}' | '\u{e0000}'..='\u{e007f}')
}

impl Tokens {
    /// Creates a token and returns it with its one-string form (shown once).
    pub async fn create(
        state: &super::State,
        ttl_seconds: Option<u64>,
        uses: Option<u32>,
        description: String,
        forget_after: u64,
    ) -> Result<(Token, JoinToken), crate::error::Error> {
        let floor = state.forget_after_floor;
        if forget_after != 0 && !(floor..=MAX_TTL_SECONDS).contains(&forget_after) {
            return Err(crate::error::Error::InvalidArgument(format!(
                "forget after {forget_after} s: between {} and {} days (or never: 0 in the API, `never` to \
                 weavectl); shorter than 5m can forget live hosts in the coordinator's own outage, and needs \
                 `coordinator serve --forget-after-floor`",
                weave_proto::duration::format(floor),
                MAX_TTL_SECONDS / 86_400
            )));
        }
        if description.len() > MAX_DESCRIPTION_LEN {
            return Err(crate::error::Error::InvalidArgument(format!(
                "a token description of {} bytes: at most {MAX_DESCRIPTION_LEN}",
                description.len()
            )));
        }
        // Shown in `weavectl token ls`: no newlines or terminal escapes, and
        // no invisible format characters (a right-to-left override or a
        // zero-width space would disguise the row).
        if description.chars().any(|c| c.is_control() || is_format(c)) {
            return Err(crate::error::Error::InvalidArgument(
                "a token description with control or invisible format characters (newlines, escapes, \
                 direction overrides, zero-width spaces): plain text only"
                    .into(),
            ));
        }

        let (id, secret) = (new_id(), new_secret());
        let token = state
            .store
            .create_token(NewToken {
                id: id.clone(),
                secret_hash: hash_secret(&secret),
                ttl_seconds,
                uses,
                description,
                forget_after,
            })
            .await?;
        let join = JoinToken { coordinator: state.advertise.clone(), pin: state.pin, id, secret };
        Ok((token, join))
    }
}

#[tonic::async_trait]
impl TokenService for Tokens {
    #[tracing::instrument(skip_all)]
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        self.0.admin(&request).await?;
        let r = request.into_inner();
        let ttl = match (r.never_expires, r.ttl_seconds) {
            (true, _) => None,
            (false, 0) => self.0.token_ttl.map(|d| d.as_secs()),
            (false, s) => Some(s),
        };
        if let Some(e) = ttl.and_then(ttl_too_long) {
            return Err(crate::error::Error::InvalidArgument(e).into());
        }
        let uses = Some(r.uses).filter(|u| *u > 0);
        let (token, join) = Self::create(&self.0, ttl, uses, r.description, r.forget_after_seconds).await?;
        tracing::info!(
            token = %token.id, expires_at = token.expires_at, uses = ?uses, forget_after = r.forget_after_seconds,
            "join token created"
        );
        Ok(Response::new(CreateTokenResponse { token: Some(token), secret_token: join.to_string() }))
    }

    async fn list_tokens(&self, request: Request<ListTokensRequest>) -> Result<Response<ListTokensResponse>, Status> {
        self.0.admin(&request).await?;
        Ok(Response::new(ListTokensResponse { tokens: self.0.store.list_tokens().await? }))
    }

    // The id is not logged as given: a whole token pasted there carries its secret.
    #[tracing::instrument(skip_all)]
    async fn revoke_token(&self, request: Request<RevokeTokenRequest>) -> Result<Response<Token>, Status> {
        self.0.admin(&request).await?;
        let token = self.0.store.revoke_token(&request.get_ref().id).await?;
        tracing::info!(token = %token.id, "join token revoked");
        Ok(Response::new(token))
    }
}
