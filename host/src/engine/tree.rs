//! The workflow tree of one render: validated, indexed, and serializable as
//! a frame in Smithers' canonical element shape.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::runtime::{Backoff, Node, NodeKind, OnDeny, OnMaxReached};

/// Options of a task as the planner needs them.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub retries: u32,
    pub backoff: Backoff,
    pub initial_delay_ms: u64,
    pub timeout_ms: Option<u64>,
    pub continue_on_fail: bool,
    pub skip: bool,
    pub label: Option<String>,
    pub meta: Option<String>,
}

/// Options of an approval.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalSpec {
    pub title: Option<String>,
    pub summary: Option<String>,
    pub on_deny: OnDeny,
    pub allowed_scopes: Vec<String>,
    pub allowed_users: Vec<String>,
    pub meta: Option<String>,
}

/// Options of a loop.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopSpec {
    pub max_iterations: u32,
    pub until: bool,
    pub on_max_reached: OnMaxReached,
}

/// A node's kind, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Task(TaskSpec),
    Approval(ApprovalSpec),
    Signal(String),
    Sequence,
    Parallel(Option<u32>),
    Loop(LoopSpec),
}

/// One node with its children.
#[derive(Debug, Clone)]
pub struct TreeNode {
    pub id: Arc<str>,
    pub kind: Kind,
    pub children: Vec<usize>,
    /// Id of the loop this node is inside, if any.
    pub enclosing_loop: Option<usize>,
}

/// A validated render.
#[derive(Debug, Clone)]
pub struct Tree {
    pub nodes: Vec<TreeNode>,
    pub roots: Vec<usize>,
}

impl Tree {
    /// Validates a rendered node list: unique non-empty ids, parents that come
    /// before their children and are containers, no nested loops.
    pub fn from_wire(wire: Vec<Node>) -> Result<Self, String> {
        if wire.is_empty() {
            return Err("render returned an empty tree".into());
        }
        let mut nodes: Vec<TreeNode> = Vec::with_capacity(wire.len());
        let mut seen = HashSet::with_capacity(wire.len());
        let mut roots = Vec::new();
        for (position, node) in wire.into_iter().enumerate() {
            if node.id.is_empty() {
                return Err(format!("node #{position} has an empty id"));
            }
            if !seen.insert(node.id.clone()) {
                return Err(format!("duplicate node id {:?}", node.id));
            }
            let kind = match node.kind {
                NodeKind::Task(o) => Kind::Task(TaskSpec {
                    retries: o.retries,
                    backoff: o.backoff,
                    initial_delay_ms: o.initial_delay_ms,
                    timeout_ms: o.timeout_ms,
                    continue_on_fail: o.continue_on_fail,
                    skip: o.skip,
                    label: o.label,
                    meta: o.meta,
                }),
                NodeKind::Approval(o) => Kind::Approval(ApprovalSpec {
                    title: o.title,
                    summary: o.summary,
                    on_deny: o.on_deny,
                    allowed_scopes: o.allowed_scopes,
                    allowed_users: o.allowed_users,
                    meta: o.meta,
                }),
                NodeKind::WaitForSignal(name) => {
                    if name.is_empty() {
                        return Err(format!(
                            "signal node {:?} has an empty signal name",
                            node.id
                        ));
                    }
                    Kind::Signal(name)
                }
                NodeKind::Sequence => Kind::Sequence,
                NodeKind::Parallel(max) => Kind::Parallel(max.filter(|m| *m > 0)),
                NodeKind::Loop(o) => {
                    if o.max_iterations == 0 {
                        return Err(format!("loop {:?} has max-iterations 0", node.id));
                    }
                    Kind::Loop(LoopSpec {
                        max_iterations: o.max_iterations,
                        until: o.until,
                        on_max_reached: o.on_max_reached,
                    })
                }
            };
            let mut enclosing_loop = None;
            match node.parent {
                None => roots.push(position),
                Some(parent) => {
                    let parent = parent as usize;
                    let Some(parent_node) = nodes.get_mut(parent) else {
                        return Err(format!(
                            "node {:?} names parent #{parent}, which does not precede it",
                            node.id
                        ));
                    };
                    if !matches!(
                        parent_node.kind,
                        Kind::Sequence | Kind::Parallel(_) | Kind::Loop(_)
                    ) {
                        return Err(format!(
                            "node {:?} has parent {:?}, which cannot have children",
                            node.id, parent_node.id
                        ));
                    }
                    parent_node.children.push(position);
                    enclosing_loop = if matches!(parent_node.kind, Kind::Loop(_)) {
                        Some(parent)
                    } else {
                        parent_node.enclosing_loop
                    };
                }
            }
            if matches!(kind, Kind::Loop(_)) && enclosing_loop.is_some() {
                return Err(format!(
                    "loop {:?} is nested in another loop, which is not supported",
                    node.id
                ));
            }
            nodes.push(TreeNode {
                id: node.id.into(),
                kind,
                children: Vec::new(),
                enclosing_loop,
            });
        }
        Ok(Self { nodes, roots })
    }

    /// The node with this id, if the tree has one.
    pub fn node(&self, id: &str) -> Option<&TreeNode> {
        self.nodes.iter().find(|n| &*n.id == id)
    }

    /// The canonical JSON of the tree (Smithers' `xmlJson` element shape),
    /// its task index, and the sha256 of both.
    pub fn frame(
        &self,
        workflow_name: &str,
        iteration_of: impl Fn(usize) -> u32,
    ) -> (String, String, String) {
        let children: Vec<Value> = self.roots.iter().map(|&i| self.element(i)).collect();
        let root = json!({
            "kind": "element",
            "tag": "smithers:workflow",
            "props": { "name": workflow_name },
            "children": children,
        });
        let tree_json = root.to_string();
        let mut ordinal = 0;
        let mut index = Vec::new();
        for (position, node) in self.nodes.iter().enumerate() {
            let kind = match node.kind {
                Kind::Task(_) => "task",
                Kind::Approval(_) => "approval",
                Kind::Signal(_) => "signal",
                _ => continue,
            };
            index.push(json!({
                "nodeId": &*node.id,
                "ordinal": ordinal,
                "iteration": iteration_of(position),
                "kind": kind,
            }));
            ordinal += 1;
        }
        let task_index_json = Value::Array(index).to_string();
        // The hash identifies the stored frame content, which includes the
        // task index (its iterations change as loops advance).
        let mut digest = Sha256::new();
        digest.update(tree_json.as_bytes());
        digest.update(b"\n");
        digest.update(task_index_json.as_bytes());
        (tree_json, task_index_json, hex::encode(digest.finalize()))
    }

    fn element(&self, position: usize) -> Value {
        let node = &self.nodes[position];
        let mut props = Map::new();
        props.insert("id".into(), Value::String(node.id.to_string()));
        let tag = match &node.kind {
            Kind::Task(spec) => {
                if let Some(label) = &spec.label {
                    props.insert("label".into(), label.clone().into());
                }
                if spec.retries > 0 {
                    props.insert("retries".into(), spec.retries.to_string().into());
                }
                if let Some(timeout) = spec.timeout_ms {
                    props.insert("timeoutMs".into(), timeout.to_string().into());
                }
                if spec.continue_on_fail {
                    props.insert("continueOnFail".into(), "true".into());
                }
                if spec.skip {
                    props.insert("skipIf".into(), "true".into());
                }
                "smithers:task"
            }
            Kind::Approval(spec) => {
                if let Some(title) = &spec.title {
                    props.insert("title".into(), title.clone().into());
                }
                "smithers:approval"
            }
            Kind::Signal(name) => {
                props.insert("signal".into(), name.clone().into());
                "smithers:signal"
            }
            Kind::Sequence => "smithers:sequence",
            Kind::Parallel(max) => {
                if let Some(max) = max {
                    props.insert("maxConcurrency".into(), max.to_string().into());
                }
                "smithers:parallel"
            }
            Kind::Loop(spec) => {
                props.insert(
                    "maxIterations".into(),
                    spec.max_iterations.to_string().into(),
                );
                props.insert("until".into(), spec.until.to_string().into());
                "smithers:loop"
            }
        };
        // serde_json's Map keeps keys sorted (no `preserve_order`), which is
        // what makes this JSON canonical.
        let children: Vec<Value> = node.children.iter().map(|&c| self.element(c)).collect();
        json!({ "kind": "element", "tag": tag, "props": props, "children": children })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::runtime::{LoopOptions, TaskOptions};

    pub fn task(id: &str, parent: Option<u32>) -> Node {
        Node {
            id: id.into(),
            parent,
            kind: NodeKind::Task(TaskOptions {
                retries: 0,
                backoff: Backoff::Fixed,
                initial_delay_ms: 0,
                timeout_ms: None,
                continue_on_fail: false,
                skip: false,
                label: None,
                meta: None,
            }),
        }
    }

    pub fn container(id: &str, parent: Option<u32>, kind: NodeKind) -> Node {
        Node {
            id: id.into(),
            parent,
            kind,
        }
    }

    #[test]
    fn rejects_duplicates_forward_parents_leaf_parents_and_nested_loops() {
        let dup = vec![
            container("s", None, NodeKind::Sequence),
            task("a", Some(0)),
            task("a", Some(0)),
        ];
        assert!(Tree::from_wire(dup).unwrap_err().contains("duplicate"));
        let forward = vec![task("a", Some(1)), container("s", None, NodeKind::Sequence)];
        assert!(
            Tree::from_wire(forward)
                .unwrap_err()
                .contains("does not precede")
        );
        let leaf_parent = vec![task("a", None), task("b", Some(0))];
        assert!(
            Tree::from_wire(leaf_parent)
                .unwrap_err()
                .contains("cannot have children")
        );
        let lp = |id: &str, parent| {
            container(
                id,
                parent,
                NodeKind::Loop(LoopOptions {
                    max_iterations: 3,
                    until: false,
                    on_max_reached: OnMaxReached::ReturnLast,
                }),
            )
        };
        let nested = vec![
            lp("outer", None),
            container("s", Some(0), NodeKind::Sequence),
            lp("inner", Some(1)),
        ];
        assert!(Tree::from_wire(nested).unwrap_err().contains("nested"));
    }

    #[test]
    fn frames_are_canonical_and_hash_stable() {
        let wire = || {
            vec![
                container("s", None, NodeKind::Sequence),
                task("a", Some(0)),
                task("b", Some(0)),
            ]
        };
        let (json1, index1, hash1) = Tree::from_wire(wire()).unwrap().frame("wf", |_| 0);
        let (json2, _, hash2) = Tree::from_wire(wire()).unwrap().frame("wf", |_| 0);
        assert_eq!(json1, json2);
        assert_eq!(hash1, hash2);
        assert!(json1.contains("\"tag\":\"smithers:task\""));
        assert!(index1.contains("\"nodeId\":\"b\""));
    }
}
