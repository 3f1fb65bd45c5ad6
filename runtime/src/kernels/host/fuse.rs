//! A fused sequence on the host: its layers' [`Op`]s as one chain, so that the values
//! between them never become dfdx tensors.

use dfdx::nn::ModuleMut;
use dfdx::shapes::Shape;
use dfdx::tensor::{OwnedTape, Tensor};

use super::chain::{self, HostLayer};
use super::conv::ConvLayer;
use super::elementwise::{ReluLayer, ResidualLayer};
use super::norm::BnLayer;
use super::Host;
use crate::device::{FloatDtype, HostAccess};
use crate::kernels::{Describe, Fuse, Op};
use crate::Result;

impl<E: FloatDtype, D: HostAccess<E>> Fuse<E, D> for Host {
    fn fused<Si: Shape, So: Shape, L>(
        x: Tensor<Si, E, D, OwnedTape<E, D>>,
        layers: &mut L,
    ) -> Result<Tensor<So, E, D, OwnedTape<E, D>>>
    where
        L: Describe<E, D>
            + ModuleMut<
                Tensor<Si, E, D, OwnedTape<E, D>>,
                Output = Tensor<So, E, D, OwnedTape<E, D>>,
                Error = D::Err,
            >,
    {
        let mut ops = Vec::new();
        layers.describe(&mut ops)?;
        let mut chain = host_layers(ops)?;
        let mut refs: Vec<&mut dyn HostLayer<E, D>> =
            chain.iter_mut().map(|l| &mut **l as _).collect();
        chain::run("Fused", x, &mut refs)
    }
}

/// The chain's layers of a fused sequence's ops.
fn host_layers<'a, E: FloatDtype, D: HostAccess<E>>(
    ops: Vec<Op<'a, E, D>>,
) -> Result<Vec<Box<dyn HostLayer<E, D> + 'a>>> {
    ops.into_iter()
        .map(|op| -> Result<Box<dyn HostLayer<E, D> + 'a>> {
            Ok(match op {
                Op::Conv { weight, bias, opts } => Box::new(ConvLayer { weight, bias, opts }),
                Op::BatchNorm(norm) => Box::new(BnLayer::of(norm)?),
                Op::ReLU => Box::new(ReluLayer),
                Op::Residual { f, r } => Box::new(ResidualLayer {
                    f: host_layers(f)?,
                    r: host_layers(r)?,
                }),
            })
        })
        .collect()
}
