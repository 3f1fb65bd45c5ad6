//! [`delegate!`]: an implementation whose families call others', each call through a macro of
//! the implementation's own that picks the callee (`OnCpu`: the host kernels or the composed
//! ones, by the thread's guard; `Cudnn`: the composed ones for what cuDNN does not compute).
//! Each family's signature is written here once.

/// `delegate!(Kernels, pick: Family, …)` implements each named family for `Kernels` (every
/// dtype, every device of the family's bounds), each method as `pick!(Family<…>, method(args))`.
macro_rules! delegate {
    ($kernels:ty, $pick:ident: $($family:ident),* $(,)?) => {
        $(delegate!(@ $family $kernels, $pick);)*
    };
    (@ Dense $k:ty, $pick:ident) => {
        impl<E: $crate::FloatDtype, D: $crate::device::HostAccess<E>> $crate::kernels::Dense<E, D> for $k {
            fn linear<B: ::dfdx::shapes::Dim, const I: usize, const O: usize, T: ::dfdx::tensor::Tape<E, D>>(
                x: ::dfdx::tensor::Tensor<(B, ::dfdx::shapes::Const<I>), E, D, T>,
                weight: &::dfdx::tensor::Tensor<::dfdx::shapes::Rank2<O, I>, E, D>,
                bias: Option<&::dfdx::tensor::Tensor<::dfdx::shapes::Rank1<O>, E, D>>,
            ) -> $crate::Result<::dfdx::tensor::Tensor<(B, ::dfdx::shapes::Const<O>), E, D, T>> {
                $pick!($crate::kernels::Dense<E, D>, linear(x, weight, bias))
            }
        }
    };
    (@ Conv $k:ty, $pick:ident) => {
        impl<E: $crate::FloatDtype, D: $crate::device::HostAccess<E>> $crate::kernels::Conv<E, D> for $k {
            fn conv2d<T: ::dfdx::tensor::Tape<E, D>>(
                x: $crate::shapes::Dyn4<E, D, T>,
                weight: &$crate::shapes::Dyn4<E, D>,
                bias: Option<&::dfdx::tensor::Tensor<(usize,), E, D>>,
                g: &$crate::shapes::ConvGeom,
            ) -> $crate::Result<$crate::shapes::Dyn4<E, D, T>> {
                $pick!($crate::kernels::Conv<E, D>, conv2d(x, weight, bias, g))
            }
        }
    };
    (@ Norm $k:ty, $pick:ident) => {
        impl<E: $crate::FloatDtype, D: $crate::device::HostAccess<E>> $crate::kernels::Norm<E, D> for $k {
            fn batch_norm_train<T: ::dfdx::tensor::Tape<E, D>, const C: usize>(
                x: $crate::shapes::Images<C, E, D, T>,
                weight: &::dfdx::tensor::Tensor<::dfdx::shapes::Rank1<C>, E, D>,
                bias: &::dfdx::tensor::Tensor<::dfdx::shapes::Rank1<C>, E, D>,
                epsilon: f64,
            ) -> $crate::Result<$crate::kernels::Normalized<C, E, D, T>> {
                $pick!($crate::kernels::Norm<E, D>, batch_norm_train(x, weight, bias, epsilon))
            }

            fn batch_norm_eval<const C: usize>(
                x: $crate::shapes::Images<C, E, D>,
                mean: &::dfdx::tensor::Tensor<::dfdx::shapes::Rank1<C>, E, D>,
                var: &::dfdx::tensor::Tensor<::dfdx::shapes::Rank1<C>, E, D>,
                weight: &::dfdx::tensor::Tensor<::dfdx::shapes::Rank1<C>, E, D>,
                bias: &::dfdx::tensor::Tensor<::dfdx::shapes::Rank1<C>, E, D>,
                epsilon: f64,
            ) -> $crate::Result<$crate::shapes::Images<C, E, D>> {
                $pick!($crate::kernels::Norm<E, D>, batch_norm_eval(x, mean, var, weight, bias, epsilon))
            }
        }
    };
    (@ Pool $k:ty, $pick:ident) => {
        impl<E: $crate::FloatDtype, D: $crate::device::HostAccess<E>> $crate::kernels::Pool<E, D> for $k {
            fn pool2d<T: ::dfdx::tensor::Tape<E, D>, const C: usize>(
                x: $crate::shapes::Images<C, E, D, T>,
                kind: $crate::shapes::PoolKind,
                k: usize,
                stride: usize,
                padding: usize,
            ) -> $crate::Result<$crate::shapes::Images<C, E, D, T>> {
                $pick!($crate::kernels::Pool<E, D>, pool2d(x, kind, k, stride, padding))
            }

            fn adaptive_avg_pool2d<T: ::dfdx::tensor::Tape<E, D>, const C: usize>(
                x: $crate::shapes::Images<C, E, D, T>,
                out_h: usize,
                out_w: usize,
            ) -> $crate::Result<$crate::shapes::Images<C, E, D, T>> {
                $pick!($crate::kernels::Pool<E, D>, adaptive_avg_pool2d(x, out_h, out_w))
            }
        }
    };
    (@ Elementwise $k:ty, $pick:ident) => {
        impl<E: $crate::FloatDtype, D: $crate::device::HostAccess<E>> $crate::kernels::Elementwise<E, D> for $k {
            fn relu<S: ::dfdx::shapes::Shape, T: ::dfdx::tensor::Tape<E, D>>(
                x: ::dfdx::tensor::Tensor<S, E, D, T>,
            ) -> $crate::Result<::dfdx::tensor::Tensor<S, E, D, T>> {
                $pick!($crate::kernels::Elementwise<E, D>, relu(x))
            }

            fn add_relu<S: ::dfdx::shapes::Shape, T: ::dfdx::tensor::Tape<E, D>>(
                a: ::dfdx::tensor::Tensor<S, E, D, T>,
                b: ::dfdx::tensor::Tensor<S, E, D, T>,
            ) -> $crate::Result<::dfdx::tensor::Tensor<S, E, D, T>> {
                $pick!($crate::kernels::Elementwise<E, D>, add_relu(a, b))
            }
        }
    };
    (@ Fuse $k:ty, $pick:ident) => {
        impl<E: $crate::FloatDtype, D: $crate::device::HostAccess<E>> $crate::kernels::Fuse<E, D> for $k {
            fn fused<Si: ::dfdx::shapes::Shape, So: ::dfdx::shapes::Shape, L>(
                x: ::dfdx::tensor::Tensor<Si, E, D, ::dfdx::tensor::OwnedTape<E, D>>,
                layers: &mut L,
            ) -> $crate::Result<::dfdx::tensor::Tensor<So, E, D, ::dfdx::tensor::OwnedTape<E, D>>>
            where
                L: $crate::kernels::Describe<E, D>
                    + ::dfdx::nn::ModuleMut<
                        ::dfdx::tensor::Tensor<Si, E, D, ::dfdx::tensor::OwnedTape<E, D>>,
                        Output = ::dfdx::tensor::Tensor<So, E, D, ::dfdx::tensor::OwnedTape<E, D>>,
                        Error = D::Err,
                    >,
            {
                $pick!($crate::kernels::Fuse<E, D>, fused(x, layers))
            }
        }
    };
    (@ Step $k:ty, $pick:ident) => {
        impl<E: $crate::FloatDtype, D: $crate::device::HostAccess<E>> $crate::kernels::Step<E, D> for $k {
            fn step(
                rule: $crate::kernels::StepRule<'_>,
                param: &mut dyn $crate::walk::AnyTensorMut<E, D>,
                grads: &mut ::dfdx::tensor::Gradients<E, D>,
                buffers: &mut [$crate::kernels::Flat<E, D>],
                scratch: &mut $crate::kernels::Scratch<E>,
            ) -> $crate::Result<()> {
                $pick!($crate::kernels::Step<E, D>, step(rule, param, grads, buffers, scratch))
            }
        }
    };
    (@ Reduce $k:ty, $pick:ident) => {
        impl<E: $crate::FloatDtype, D: $crate::device::HostAccess<E>> $crate::kernels::Reduce<E, D> for $k {
            fn grad_sum(
                what: $crate::kernels::GradSum,
                param: &dyn $crate::walk::AnyTensor<E, D>,
                grads: &mut ::dfdx::tensor::Gradients<E, D>,
                total: &mut $crate::kernels::Total<E, D>,
            ) -> $crate::Result<()> {
                $pick!($crate::kernels::Reduce<E, D>, grad_sum(what, param, grads, total))
            }
        }
    };
    (@ Unscale $k:ty, $pick:ident) => {
        impl<D: $crate::device::HostAccess<f32> + $crate::device::HostAccess<$crate::device::Half>>
            $crate::kernels::Unscale<D> for $k
        {
            fn unscale(
                from: &dyn $crate::walk::Params<$crate::device::Half, D>,
                from_grads: &mut ::dfdx::tensor::Gradients<$crate::device::Half, D>,
                into: &dyn $crate::walk::Params<f32, D>,
                grads: &mut ::dfdx::tensor::Gradients<f32, D>,
                inv: f64,
                scratch: &mut $crate::kernels::Scratch<f32>,
            ) -> $crate::Result<bool> {
                $pick!($crate::kernels::Unscale<D>, unscale(from, from_grads, into, grads, inv, scratch))
            }
        }
    };
}
