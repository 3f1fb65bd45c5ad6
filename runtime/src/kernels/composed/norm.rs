//! Batch normalization from dfdx's ops; training is a segment.

use dfdx::shapes::{HasShape, Rank1};
use dfdx::tensor::{NoneTape, Tape, Tensor};
use dfdx::tensor_ops::{BroadcastTo, TryAdd, TryDiv, TryMul, TrySub};

use super::planes::Planes;
use super::segment::{segment, Handle};
use super::Composed;
use crate::device::{of_f64, FloatDtype, HostAccess};
use crate::kernels::{Norm, Normalized};
use crate::shapes::Images;
use crate::{Error, Result};

fn batch_norm_train_ops<E: FloatDtype, D: HostAccess<E>, T: Tape<E, D>, const C: usize>(
    x: Images<C, E, D, T>,
    weight: &Tensor<Rank1<C>, E, D>,
    bias: &Tensor<Rank1<C>, E, D>,
    epsilon: f64,
) -> Result<Normalized<C, E, D, T>> {
    let (n, _, h, w) = *x.shape();
    let planes = Planes::new(x.device(), (n, h, w));
    let eps = of_f64::<E>(epsilon);
    let mean = planes.mean(x.retaped::<T>())?;
    let mean_value = mean.retaped::<NoneTape>();
    let centred = x.try_sub(planes.spread(mean)?)?;
    let var = planes.mean(centred.retaped::<T>().try_square()?)?;
    let var_value = var.retaped::<NoneTape>();
    let scale = weight
        .retaped::<T>()
        .try_div(var.try_add(eps)?.try_sqrt()?)?;
    let y = centred
        .try_mul(planes.spread(scale)?)?
        .try_add(planes.spread(bias.retaped::<T>())?)?;
    Ok((y, mean_value, var_value))
}

impl<E: FloatDtype, D: HostAccess<E>> Norm<E, D> for Composed {
    /// A segment.
    fn batch_norm_train<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        weight: &Tensor<Rank1<C>, E, D>,
        bias: &Tensor<Rank1<C>, E, D>,
        epsilon: f64,
    ) -> Result<Normalized<C, E, D, T>> {
        let params: Vec<Box<dyn Handle<E, D>>> =
            vec![Box::new(weight.clone()), Box::new(bias.clone())];
        let mut stats = None;
        let y = segment([x], params, |[x]| {
            let (y, mean, var) = batch_norm_train_ops(x, weight, bias, epsilon)?;
            stats = Some((mean, var));
            Ok(y)
        })?;
        let (mean, var) = stats.ok_or_else(|| Error::msg("batch norm: no statistics"))?;
        Ok((y, mean, var))
    }

    /// `(x − mean) · weight / √(var + ε) + bias`.
    fn batch_norm_eval<const C: usize>(
        x: Images<C, E, D>,
        mean: &Tensor<Rank1<C>, E, D>,
        var: &Tensor<Rank1<C>, E, D>,
        weight: &Tensor<Rank1<C>, E, D>,
        bias: &Tensor<Rank1<C>, E, D>,
        epsilon: f64,
    ) -> Result<Images<C, E, D>> {
        let shape = *x.shape();
        let eps = of_f64::<E>(epsilon);
        let scale = weight
            .clone()
            .try_div(var.clone().try_add(eps)?.try_sqrt()?)?;
        x.try_sub(mean.clone().try_broadcast_like(&shape)?)?
            .try_mul(scale.try_broadcast_like(&shape)?)?
            .try_add(bias.clone().try_broadcast_like(&shape)?)
            .map_err(crate::Error::from)
    }
}
