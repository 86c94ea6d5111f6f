//! The SES v2 API as a Lambda function behind a function URL: a thin wrapper over
//! [`baton_fn_api::ApiFunction`], which hands each request to the API's router.

use baton_fn_api::ApiFunction;
use lambda_http::{Error, Request, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let function = ApiFunction::from_env().await?;
    // Configuration errors first; then, before the runtime client would panic on them,
    // the variables Lambda sets.
    baton_functions::check_lambda_env()?;
    let function = &function;
    lambda_http::run(service_fn(|request: Request| async move {
        function.handle(request).await
    }))
    .await
}
