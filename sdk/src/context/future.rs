//! Carrying a context across `.await` points, task spawns and thread hops.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use super::Context;

pin_project_lite::pin_project! {
    /// A future that makes its [`Context`] current while it is polled, on
    /// whichever thread polls it. Created by [`FutureExt::with_context`].
    #[derive(Debug)]
    pub struct WithContext<F> {
        #[pin]
        inner: F,
        cx: Context,
    }
}

impl<F: Future> Future for WithContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, task: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _guard = this.cx.clone().attach();
        this.inner.poll(task)
    }
}

/// Attaches a [`Context`] to a future.
///
/// ```
/// use ferrotrace::context::{Context, FutureExt};
/// # #[derive(Debug, PartialEq)] struct Tenant(u8);
/// let fut = async { Context::current().get::<Tenant>().map(|t| t.0) };
/// let fut = fut.with_context(Context::new().with_value(Tenant(3)));
/// // `tokio::spawn(fut)` would see Tenant(3) on whichever worker polls it.
/// # let _ = fut;
/// ```
pub trait FutureExt: Sized {
    /// Polls `self` with `cx` as the current context.
    fn with_context(self, cx: Context) -> WithContext<Self> {
        WithContext { inner: self, cx }
    }
    /// Polls `self` with the context that is current now (at the call).
    fn with_current_context(self) -> WithContext<Self> {
        self.with_context(Context::current())
    }
}

impl<F: Future> FutureExt for F {}
