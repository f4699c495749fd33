//! The part of OData `$filter` that Entra ID's directory runs on `/users` (DOMAIN §2.4):
//!
//! - `prop eq 'text'`, `prop eq null`, `prop in ('a','b')`, `startsWith(prop,'a')`,
//!   `accountEnabled eq true`, `otherMails/any(x:x eq 'a')` (any lambda variable, also
//!   `startsWith(x,'a')`), joined by `and`, `or` and parentheses. String literals escape `'` as
//!   `''`. Property names and function names match case-insensitively, and so do text
//!   comparisons, as in Entra.
//! - Advanced queries (`ne`, `not`, `endsWith`) parse, but run only with `ConsistencyLevel:
//!   eventual` and `$count=true`; otherwise the caller answers 400 `Request_UnsupportedQuery`.
//! - Syntax errors and mismatched operand types are 400 `BadRequest`; an unknown property is 400
//!   `Request_BadRequest`; a known property the emulator cannot filter on, or an operator it does
//!   not model (`gt`, `contains`, …), is 400 `Request_UnsupportedQuery`.
//!
//! Filterable here: `id mail userPrincipalName displayName givenName surname jobTitle userType
//! creationType externalUserState mailNickname` (text), `accountEnabled` (boolean), `otherMails
//! proxyAddresses` (collections, through `any`).

use super::directory::{canonical_property, User};
use super::GraphError;

/// A parsed `$filter`.
pub(crate) struct Filter {
    root: Node,
    /// Why the filter needs the advanced query engine, as Graph words the refusal.
    advanced: Option<String>,
}

impl Filter {
    /// Parses `source` (already URL-decoded).
    pub(crate) fn parse(source: &str) -> Result<Filter, GraphError> {
        let tokens = lex(source)?;
        let mut parser = Parser { source, tokens, next: 0, advanced: None };
        let root = parser.or_expr()?;
        if let Some((at, _)) = parser.tokens.get(parser.next) {
            return Err(parser.syntax_error(*at));
        }
        Ok(Filter { root, advanced: parser.advanced })
    }

    /// `Some(message)` when the filter may only run with `ConsistencyLevel: eventual` and
    /// `$count=true`.
    pub(crate) fn advanced_requirement(&self) -> Option<&str> {
        self.advanced.as_deref()
    }

    /// Whether `user` satisfies the filter.
    pub(crate) fn matches(&self, user: &User) -> bool {
        self.root.eval(user)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Open,
    Close,
    Comma,
    Colon,
    Slash,
}

fn lex(source: &str) -> Result<Vec<(usize, Token)>, GraphError> {
    let mut tokens = Vec::new();
    let mut chars = source.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            '(' => Token::Open,
            ')' => Token::Close,
            ',' => Token::Comma,
            ':' => Token::Colon,
            '/' => Token::Slash,
            '\'' => {
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\'')) if chars.peek().is_some_and(|(_, c)| *c == '\'') => {
                            chars.next();
                            text.push('\'');
                        }
                        Some((_, '\'')) => break,
                        Some((_, c)) => text.push(c),
                        None => return Err(syntax_error(source, at)),
                    }
                }
                Token::Text(text)
            }
            c if c.is_alphanumeric() || c == '_' || c == '.' || c == '-' => {
                let mut word = c.to_string();
                while let Some((_, c)) = chars.next_if(|(_, c)| c.is_alphanumeric() || matches!(c, '_' | '.' | '-')) {
                    word.push(c);
                }
                Token::Word(word)
            }
            _ => return Err(syntax_error(source, at)),
        };
        tokens.push((at, token));
    }
    Ok(tokens)
}

fn syntax_error(source: &str, at: usize) -> GraphError {
    GraphError::bad_request(format!("Invalid filter clause: Syntax error at position {at} in '{source}'."))
}

/// A property a filter can name.
#[derive(Clone, Copy, Debug)]
enum Prop {
    Text(&'static str),
    Flag(&'static str),
    List(&'static str),
}

#[rustfmt::skip]
const TEXT_PROPS: &[&str] = &[
    "id", "mail", "userPrincipalName", "displayName", "givenName", "surname", "jobTitle",
    "userType", "creationType", "externalUserState", "mailNickname",
];
const LIST_PROPS: &[&str] = &["otherMails", "proxyAddresses"];

impl Prop {
    fn resolve(name: &str) -> Result<Prop, GraphError> {
        let find = |set: &[&'static str]| set.iter().copied().find(|p| p.eq_ignore_ascii_case(name));
        if let Some(p) = find(TEXT_PROPS) {
            Ok(Prop::Text(p))
        } else if let Some(p) = find(LIST_PROPS) {
            Ok(Prop::List(p))
        } else if name.eq_ignore_ascii_case("accountEnabled") {
            Ok(Prop::Flag("accountEnabled"))
        } else if let Some(p) = canonical_property(name) {
            Err(unsupported_clause(p))
        } else {
            Err(GraphError::request_bad_request(format!(
                "Could not find a property named '{name}' on type 'Microsoft.DirectoryServices.User'."
            )))
        }
    }

    fn name(self) -> &'static str {
        match self {
            Prop::Text(n) | Prop::Flag(n) | Prop::List(n) => n,
        }
    }

    fn edm_type(self) -> &'static str {
        match self {
            Prop::Text(_) => "Edm.String",
            Prop::Flag(_) => "Edm.Boolean",
            Prop::List(_) => "Collection(Edm.String)",
        }
    }
}

fn unsupported_clause(property: &str) -> GraphError {
    GraphError::unsupported_query(format!(
        "Unsupported or invalid query filter clause specified for property '{property}' of resource 'User'."
    ))
}

#[derive(Clone, Debug, PartialEq)]
enum Literal {
    Text(String),
    Flag(bool),
    Null,
}

impl Literal {
    fn edm_type(&self) -> &'static str {
        match self {
            Literal::Text(_) => "Edm.String",
            Literal::Flag(_) => "Edm.Boolean",
            Literal::Null => "null",
        }
    }
}

/// A test on one value.
#[derive(Debug)]
enum Test {
    Eq(Literal),
    Ne(Literal),
    In(Vec<Literal>),
    StartsWith(String),
    EndsWith(String),
}

impl Test {
    fn holds_for_text(&self, value: Option<&str>) -> bool {
        let equal = |literal: &Literal| match literal {
            Literal::Text(t) => value.is_some_and(|v| v.to_lowercase() == t.to_lowercase()),
            Literal::Null => value.is_none(),
            Literal::Flag(_) => false,
        };
        match self {
            Test::Eq(literal) => equal(literal),
            Test::Ne(literal) => !equal(literal),
            Test::In(literals) => literals.iter().any(equal),
            Test::StartsWith(prefix) => value.is_some_and(|v| v.to_lowercase().starts_with(&prefix.to_lowercase())),
            Test::EndsWith(suffix) => value.is_some_and(|v| v.to_lowercase().ends_with(&suffix.to_lowercase())),
        }
    }

    fn holds_for_flag(&self, value: bool) -> bool {
        match self {
            Test::Eq(Literal::Flag(f)) => value == *f,
            Test::Ne(Literal::Flag(f)) => value != *f,
            _ => false,
        }
    }
}

#[derive(Debug)]
enum Node {
    Or(Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Test(Prop, Test),
    Any(&'static str, Test),
}

impl Node {
    fn eval(&self, user: &User) -> bool {
        match self {
            Node::Or(a, b) => a.eval(user) || b.eval(user),
            Node::And(a, b) => a.eval(user) && b.eval(user),
            Node::Not(a) => !a.eval(user),
            Node::Test(Prop::Text(p), test) => test.holds_for_text(user.text(p)),
            Node::Test(Prop::Flag(_), test) => test.holds_for_flag(user.account_enabled),
            Node::Test(Prop::List(_), _) => false,
            Node::Any(p, test) => user.list(p).iter().any(|v| test.holds_for_text(Some(v))),
        }
    }
}

struct Parser<'a> {
    source: &'a str,
    tokens: Vec<(usize, Token)>,
    next: usize,
    advanced: Option<String>,
}

impl Parser<'_> {
    fn syntax_error(&self, at: usize) -> GraphError {
        syntax_error(self.source, at)
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(_, t)| t)
    }

    /// Position of the next token, or the end of the source.
    fn here(&self) -> usize {
        self.tokens.get(self.next).map_or(self.source.len(), |(at, _)| *at)
    }

    fn bump(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.next).map(|(_, t)| t.clone());
        self.next += 1;
        token
    }

    fn expect(&mut self, wanted: &Token) -> Result<(), GraphError> {
        let at = self.here();
        match self.bump() {
            Some(ref token) if token == wanted => Ok(()),
            _ => Err(self.syntax_error(at)),
        }
    }

    fn word(&mut self) -> Result<String, GraphError> {
        let at = self.here();
        match self.bump() {
            Some(Token::Word(word)) => Ok(word),
            _ => Err(self.syntax_error(at)),
        }
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword))
    }

    fn needs_advanced(&mut self, message: String) {
        self.advanced.get_or_insert(message);
    }

    fn or_expr(&mut self) -> Result<Node, GraphError> {
        let mut left = self.and_expr()?;
        while self.at_keyword("or") {
            self.next += 1;
            left = Node::Or(Box::new(left), Box::new(self.and_expr()?));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Node, GraphError> {
        let mut left = self.unary()?;
        while self.at_keyword("and") {
            self.next += 1;
            left = Node::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, GraphError> {
        if self.at_keyword("not") {
            self.next += 1;
            self.needs_advanced("Unsupported Query.".into());
            return Ok(Node::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Token::Open) {
            self.next += 1;
            let inner = self.or_expr()?;
            self.expect(&Token::Close)?;
            return Ok(inner);
        }
        let name = self.word()?;
        match self.peek() {
            Some(Token::Open) => {
                let (prop, test) = self.function(&name, None)?;
                if let Prop::List(p) = prop {
                    return Err(incompatible(Prop::List(p).edm_type(), "Edm.String", &name));
                }
                Ok(Node::Test(prop, test))
            }
            Some(Token::Slash) => self.lambda(&name),
            _ => {
                let prop = Prop::resolve(&name)?;
                let test = self.comparison(prop)?;
                Ok(Node::Test(prop, test))
            }
        }
    }

    /// `startsWith(prop,'x')` / `endsWith(prop,'x')`; inside a lambda, `prop` is the variable.
    fn function(&mut self, function: &str, lambda_var: Option<&str>) -> Result<(Prop, Test), GraphError> {
        let starts = function.eq_ignore_ascii_case("startsWith");
        if !starts && !function.eq_ignore_ascii_case("endsWith") {
            return Err(GraphError::unsupported_query(format!(
                "Unsupported property filter clause operator '{function}'."
            )));
        }
        self.expect(&Token::Open)?;
        let at = self.here();
        let argument = self.word()?;
        let prop = match lambda_var {
            Some(var) if argument == var => Prop::Text("$it"),
            Some(_) => return Err(self.syntax_error(at)),
            None => Prop::resolve(&argument)?,
        };
        self.expect(&Token::Comma)?;
        let value = match self.literal()? {
            Literal::Text(t) => t,
            other => return Err(incompatible(prop.edm_type(), other.edm_type(), function)),
        };
        self.expect(&Token::Close)?;
        if let Prop::Flag(_) = prop {
            return Err(incompatible(prop.edm_type(), "Edm.String", function));
        }
        Ok((
            prop,
            if starts {
                Test::StartsWith(value)
            } else {
                self.needs_advanced("Unsupported Query.".into());
                Test::EndsWith(value)
            },
        ))
    }

    /// `otherMails/any(x:x eq 'a')` or `otherMails/any(x:startsWith(x,'a'))`.
    fn lambda(&mut self, name: &str) -> Result<Node, GraphError> {
        let prop = Prop::resolve(name)?;
        self.expect(&Token::Slash)?;
        let at = self.here();
        if !self.word()?.eq_ignore_ascii_case("any") {
            return Err(GraphError::unsupported_query(format!(
                "graph-emulator supports only the 'any' lambda operator (at position {at})."
            )));
        }
        let Prop::List(list) = prop else {
            return Err(unsupported_clause(prop.name()));
        };
        self.expect(&Token::Open)?;
        let var = self.word()?;
        self.expect(&Token::Colon)?;
        let at = self.here();
        let head = self.word()?;
        let test = if self.peek() == Some(&Token::Open) {
            self.function(&head, Some(&var))?.1
        } else if head == var {
            match self.comparison(Prop::Text(list))? {
                test @ Test::Eq(Literal::Text(_)) => test,
                _ => return Err(unsupported_clause(list)),
            }
        } else {
            return Err(self.syntax_error(at));
        };
        self.expect(&Token::Close)?;
        Ok(Node::Any(list, test))
    }

    /// `eq literal`, `ne literal` or `in (literal, …)` after a property.
    fn comparison(&mut self, prop: Prop) -> Result<Test, GraphError> {
        let at = self.here();
        let operator = self.word()?.to_ascii_lowercase();
        let test = match operator.as_str() {
            "eq" => Test::Eq(self.literal()?),
            "ne" => {
                self.needs_advanced(unsupported_clause_message(prop.name()));
                Test::Ne(self.literal()?)
            }
            "in" => {
                self.expect(&Token::Open)?;
                let mut values = vec![self.literal()?];
                while self.peek() == Some(&Token::Comma) {
                    self.next += 1;
                    values.push(self.literal()?);
                }
                self.expect(&Token::Close)?;
                Test::In(values)
            }
            "gt" | "ge" | "lt" | "le" | "has" => {
                return Err(GraphError::unsupported_query(format!(
                    "graph-emulator does not emulate the '{operator}' operator."
                )))
            }
            _ => return Err(self.syntax_error(at)),
        };
        let literals: Vec<&Literal> = match &test {
            Test::Eq(l) | Test::Ne(l) => vec![l],
            Test::In(ls) => ls.iter().collect(),
            Test::StartsWith(_) | Test::EndsWith(_) => Vec::new(),
        };
        let kind = if operator == "ne" { "NotEqual" } else { "Equal" };
        for literal in literals {
            let fits = match prop {
                Prop::Text(_) => matches!(literal, Literal::Text(_) | Literal::Null),
                Prop::Flag(_) => matches!(literal, Literal::Flag(_)),
                Prop::List(_) => false,
            };
            if !fits {
                return Err(incompatible(prop.edm_type(), literal.edm_type(), kind));
            }
        }
        if matches!((prop, &test), (Prop::Flag(_), Test::In(_))) {
            return Err(unsupported_clause(prop.name()));
        }
        Ok(test)
    }

    fn literal(&mut self) -> Result<Literal, GraphError> {
        let at = self.here();
        match self.bump() {
            Some(Token::Text(text)) => Ok(Literal::Text(text)),
            Some(Token::Word(w)) if w == "true" => Ok(Literal::Flag(true)),
            Some(Token::Word(w)) if w == "false" => Ok(Literal::Flag(false)),
            Some(Token::Word(w)) if w == "null" => Ok(Literal::Null),
            _ => Err(self.syntax_error(at)),
        }
    }
}

fn unsupported_clause_message(property: &str) -> String {
    format!("Unsupported or invalid query filter clause specified for property '{property}' of resource 'User'.")
}

fn incompatible(left: &str, right: &str, operator: &str) -> GraphError {
    GraphError::bad_request(format!(
        "A binary operator with incompatible types was detected. Found operand types '{left}' and '{right}' for operator kind '{operator}'."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(mail: Option<&str>, other: &[&str]) -> User {
        let mut spec = super::super::NewUser::guest("seed@fabrikam.com", "Seed");
        spec.mail = mail.map(str::to_owned);
        spec.other_mails = other.iter().map(|s| (*s).to_owned()).collect();
        spec.into_user(&super::super::TenantConfig::default(), None)
    }

    fn check(filter: &str, user: &User) -> bool {
        Filter::parse(filter).unwrap().matches(user)
    }

    #[test]
    fn supported_forms() {
        let u = user(Some("O'Brien@Fabrikam.com"), &["alias@fabrikam.com"]);
        assert!(check("mail eq 'o''brien@fabrikam.com'", &u));
        assert!(check("othermails/any(id:id eq 'ALIAS@fabrikam.com')", &u));
        assert!(check("mail eq 'x@y.com' or otherMails/any(x:x eq 'alias@fabrikam.com')", &u));
        assert!(!check("mail eq 'x@y.com' and otherMails/any(x:x eq 'alias@fabrikam.com')", &u));
        assert!(check("userType eq 'Guest' and (mail eq null or startsWith(mail,'o'''))", &u));
        assert!(check("mail in ('a@b.com', 'o''brien@fabrikam.com')", &u));
        assert!(check("accountEnabled eq true", &u));
        assert!(check("userPrincipalName eq 'o''brien_fabrikam.com#EXT#@CONTOSO.onmicrosoft.com'", &u));
        assert!(!check("mail eq null", &u));
    }

    #[test]
    fn advanced_forms_are_flagged() {
        for f in ["endsWith(mail,'.com')", "mail ne 'a'", "not(mail eq 'a')", "otherMails/any(x:endsWith(x,'.com'))"] {
            assert!(Filter::parse(f).unwrap().advanced_requirement().is_some(), "{f}");
        }
        assert!(Filter::parse("mail eq 'a'").unwrap().advanced_requirement().is_none());
    }

    #[test]
    fn refusals_use_graph_codes() {
        let code = |f: &str| Filter::parse(f).err().map(|e| e.code);
        assert_eq!(code("mail eq 'unterminated"), Some("BadRequest"));
        assert_eq!(code("mail eq"), Some("BadRequest"));
        assert_eq!(code("mail eq 'a' extra"), Some("BadRequest"));
        assert_eq!(code("mail eq true"), Some("BadRequest"));
        assert_eq!(code("shoeSize eq 'a'"), Some("Request_BadRequest"));
        assert_eq!(code("officeLocation eq 'a'"), Some("Request_UnsupportedQuery"));
        assert_eq!(code("contains(mail,'a')"), Some("Request_UnsupportedQuery"));
        assert_eq!(code("otherMails/any(x:y eq 'a')"), Some("BadRequest"));
    }
}
