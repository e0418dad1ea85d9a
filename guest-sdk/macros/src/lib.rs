//! The expansion of `smithers_sdk::workflow!`. Use it through `smithers-sdk`, never directly:
//! the SDK's `workflow!` forwards here with its own `$crate` path first, so that the generated
//! code names the SDK however the author's crate spells it.
//!
//! This crate only checks the arguments (with errors spanned on the offending token) and
//! writes the `Guest` implementation that delegates to `smithers_sdk::__private`. Everything
//! that can live in ordinary Rust lives in the SDK, not here.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, LitStr, Token};

/// Expands `[$crate] name: "...", build: path, version: ..., input: Type | input_schema: ...`.
#[proc_macro]
pub fn workflow_impl(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    match syn::parse::<Args>(input) {
        Ok(args) => args.expand().into(),
        Err(err) => err.to_compile_error().into(),
    }
}

const KEYS: &str = "`name`, `build`, `version`, `input` or `input_schema`";

/// The checked arguments of one `workflow!` call.
struct Args {
    krate: TokenStream,
    name: LitStr,
    build: TokenStream,
    version: Option<TokenStream>,
    input_schema: Option<TokenStream>,
    /// The run input's type, whose JSON Schema `describe` reports.
    input: Option<syn::Type>,
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let krate;
        syn::bracketed!(krate in input);
        let krate: TokenStream = krate.parse()?;

        let mut name = None;
        let mut build = None;
        let mut version = None;
        let mut input_schema = None;
        let mut input_type = None;
        while !input.is_empty() {
            let key: Ident = input
                .parse()
                .map_err(|err| syn::Error::new(err.span(), format!("expected a key: {KEYS}")))?;
            input.parse::<Token![:]>()?;
            let value = parse_value(input, &key)?;
            let slot = match key.to_string().as_str() {
                "name" => &mut name,
                "build" => &mut build,
                "version" => &mut version,
                "input_schema" => &mut input_schema,
                "input" => &mut input_type,
                _ => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("unknown key `{key}`; workflow! takes {KEYS}"),
                    ));
                }
            };
            if slot.is_some() {
                return Err(syn::Error::new(
                    key.span(),
                    format!("`{key}` is given twice"),
                ));
            }
            *slot = Some(value);
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }

        let name = name.ok_or_else(|| {
            syn::Error::new(
                Span::call_site(),
                "workflow! needs `name: \"...\"` (and `build: <fn(&Ctx) -> Node>`)",
            )
        })?;
        let name: LitStr = syn::parse2(name.clone()).map_err(|_| {
            syn::Error::new_spanned(&name, "the workflow name must be a string literal")
        })?;
        if name.value().trim().is_empty() {
            return Err(syn::Error::new(
                name.span(),
                "the workflow name must not be empty",
            ));
        }
        let build = build.ok_or_else(|| {
            syn::Error::new(
                Span::call_site(),
                "workflow! needs `build: <fn(&Ctx) -> Node>`, the function that builds the tree",
            )
        })?;
        if let Some(schema) = &input_schema {
            check_schema_literal(schema)?;
        }
        let input = match input_type {
            Some(tokens) => {
                if input_schema.is_some() {
                    return Err(syn::Error::new_spanned(
                        &tokens,
                        "give either `input: Type` (the schema is derived from it) or \
                         `input_schema: \"...\"`, not both",
                    ));
                }
                Some(syn::parse2::<syn::Type>(tokens.clone()).map_err(|_| {
                    syn::Error::new_spanned(
                        &tokens,
                        "`input` must be the run input's type (deriving `JsonSchema`)",
                    )
                })?)
            }
            None => None,
        };
        Ok(Args {
            krate,
            name,
            build,
            version,
            input_schema,
            input,
        })
    }
}

/// The tokens of one value: everything up to the next top-level comma.
fn parse_value(input: ParseStream, key: &Ident) -> syn::Result<TokenStream> {
    let mut value = TokenStream::new();
    while !input.is_empty() && !input.peek(Token![,]) {
        value.extend([input.parse::<TokenTree>()?]);
    }
    if value.is_empty() {
        return Err(syn::Error::new(
            key.span(),
            format!("`{key}` needs a value"),
        ));
    }
    Ok(value)
}

/// A schema written as a string literal must be JSON; other expressions (such as
/// `include_str!`) are the author's responsibility.
fn check_schema_literal(schema: &TokenStream) -> syn::Result<()> {
    let Ok(lit) = syn::parse2::<LitStr>(schema.clone()) else {
        return Ok(());
    };
    serde_json::from_str::<serde_json::Value>(&lit.value())
        .map(drop)
        .map_err(|err| syn::Error::new(lit.span(), format!("`input_schema` is not JSON: {err}")))
}

impl Args {
    fn expand(self) -> TokenStream {
        let Args {
            krate,
            name,
            build,
            version,
            input_schema,
            input,
        } = self;
        let version = version.unwrap_or_else(|| quote!(::core::env!("CARGO_PKG_VERSION")));
        let input_schema = match (input, input_schema) {
            (Some(ty), _) => quote!(::core::option::Option::Some(
                #krate::__private::input_schema::<#ty>()
            )),
            (None, Some(schema)) => quote!(::core::option::Option::Some(
                ::std::string::String::from(#schema)
            )),
            (None, None) => quote!(::core::option::Option::None),
        };
        let b = quote!(#krate::__private::bindings);
        quote! {
            const _: () = {
                struct __SmithersWorkflow;

                impl #b::Guest for __SmithersWorkflow {
                    fn describe() -> #b::WorkflowInfo {
                        #krate::__private::describe(#name, #version, #input_schema)
                    }

                    fn render(
                        __smithers_ctx: #b::RenderContext,
                    ) -> ::core::result::Result<
                        ::std::vec::Vec<#b::Node>,
                        ::std::string::String,
                    > {
                        #krate::__private::render(#build, __smithers_ctx)
                    }

                    fn run_task(
                        __smithers_ctx: #b::TaskContext,
                    ) -> ::core::result::Result<::std::string::String, #b::TaskError> {
                        #krate::__private::run_task(#build, __smithers_ctx)
                    }
                }

                #b::export!(__SmithersWorkflow with_types_in #b);
            };
        }
    }
}
